"""Resize: what an instance had before a resize that waits for its confirm or revert

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-13
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resize_from', sa.JSON(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN, as 0008's: recreating `instances` would drop it under the rows that
    # reference it.
    with op.batch_alter_table('instances', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('resize_from')
