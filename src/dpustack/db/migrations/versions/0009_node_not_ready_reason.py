"""nodes: why a node is not ready (its agent's reason, or the controller's for cells it cannot use)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-13
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        # Nodes reported before had no reason: the next report says it.
        batch_op.add_column(sa.Column('not_ready_reason', sa.String(length=1024), nullable=False,
                                      server_default=''))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later too), as 0008's downgrade.
    with op.batch_alter_table('nodes', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('not_ready_reason')
