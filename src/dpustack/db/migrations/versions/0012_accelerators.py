"""Migration: accelerators, discovered by the nodes' agents or registered through the API

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'accelerators',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('node_id', sa.String(length=36), nullable=True),
        sa.Column('key', sa.String(length=128), nullable=True),
        sa.Column('family', sa.String(length=16), nullable=False),
        sa.Column('address', sa.String(length=32), nullable=False),
        sa.Column('vendor_id', sa.String(length=4), nullable=False),
        sa.Column('product_id', sa.String(length=4), nullable=False),
        sa.Column('numa_node', sa.Integer(), nullable=True),
        sa.Column('acc_specs', sa.JSON(), nullable=False),
        sa.Column('resource_class', sa.String(length=64), nullable=False),
        sa.Column('traits', sa.JSON(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('fault', sa.Text(), nullable=True),
        sa.Column('project_id', sa.String(length=36), nullable=True),
        sa.Column('attached', sa.String(length=16), nullable=True),
        sa.Column('revision', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['node_id'], ['nodes.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
        sa.UniqueConstraint('node_id', 'key', name='uq_accelerators_node_key'),
    )
    op.create_index(op.f('ix_accelerators_node_id'), 'accelerators', ['node_id'], unique=False)
    op.create_index(op.f('ix_accelerators_project_id'), 'accelerators', ['project_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_accelerators_project_id'), table_name='accelerators')
    op.drop_index(op.f('ix_accelerators_node_id'), table_name='accelerators')
    op.drop_table('accelerators')
