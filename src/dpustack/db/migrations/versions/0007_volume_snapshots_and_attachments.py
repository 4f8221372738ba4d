"""volumes: snapshots, the source snapshot, the attachment, the fault and the operation at work

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('volume_snapshots',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('project_id', sa.String(length=36), nullable=False),
    sa.Column('volume_id', sa.String(length=36), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('fault', sa.JSON(), nullable=True),
    sa.Column('instance_id', sa.String(length=36), nullable=True),
    sa.Column('node', sa.String(length=255), nullable=True),
    sa.Column('operation_id', sa.String(length=36), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['operation_id'], ['operations.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.ForeignKeyConstraint(['volume_id'], ['volumes.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('volume_snapshots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_volume_snapshots_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_volume_snapshots_volume_id'), ['volume_id'], unique=False)

    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fault', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('snapshot_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('attachment_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('attached_node', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('function_id', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('bdf', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('operation_id', sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f('ix_volumes_snapshot_id'), ['snapshot_id'], unique=False)
        batch_op.create_foreign_key('fk_volumes_snapshot_id', 'volume_snapshots', ['snapshot_id'], ['id'])
        batch_op.create_foreign_key('fk_volumes_operation_id', 'operations', ['operation_id'], ['id'],
                                    ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.drop_constraint('fk_volumes_operation_id', type_='foreignkey')
        batch_op.drop_constraint('fk_volumes_snapshot_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_volumes_snapshot_id'))
        batch_op.drop_column('operation_id')
        batch_op.drop_column('bdf')
        batch_op.drop_column('function_id')
        batch_op.drop_column('attached_node')
        batch_op.drop_column('attachment_id')
        batch_op.drop_column('snapshot_id')
        batch_op.drop_column('fault')

    with op.batch_alter_table('volume_snapshots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_volume_snapshots_volume_id'))
        batch_op.drop_index(batch_op.f('ix_volume_snapshots_project_id'))

    op.drop_table('volume_snapshots')
