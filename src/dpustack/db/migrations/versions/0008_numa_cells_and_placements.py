"""NUMA: the host cells a VM node reports, and the placement each instance claimed

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        # Nodes reported before had no cells: the next report of a VM node brings them.
        batch_op.add_column(sa.Column('numa_cells', sa.JSON(), nullable=False, server_default='[]'))
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('numa_placement', sa.JSON(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later too): recreating the tables would drop `nodes`
    # under the rows that reference it, which SQLite's foreign keys refuse.
    with op.batch_alter_table('instances', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('numa_placement')
    with op.batch_alter_table('nodes', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('numa_cells')
