"""Migration: a volume's second attachment while its instance moves to another node

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('move_attachment', sa.JSON(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN, as 0010's: recreating `volumes` would drop it under the rows that
    # reference it.
    with op.batch_alter_table('volumes', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('move_attachment')
