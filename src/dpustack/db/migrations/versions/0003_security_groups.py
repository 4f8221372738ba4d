"""security groups

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('security_groups',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.String(length=255), nullable=False),
    sa.Column('project_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'name', name='uq_security_groups_project_name')
    )
    with op.batch_alter_table('security_groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_security_groups_project_id'), ['project_id'], unique=False)

    op.create_table('security_group_rules',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('security_group_id', sa.String(length=36), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('ethertype', sa.String(length=4), nullable=False),
    sa.Column('protocol', sa.String(length=8), nullable=True),
    sa.Column('port_range_min', sa.Integer(), nullable=True),
    sa.Column('port_range_max', sa.Integer(), nullable=True),
    sa.Column('remote_ip_prefix', sa.String(length=64), nullable=True),
    sa.Column('remote_group_id', sa.String(length=36), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['remote_group_id'], ['security_groups.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['security_group_id'], ['security_groups.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('security_group_rules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_security_group_rules_remote_group_id'), ['remote_group_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_security_group_rules_security_group_id'), ['security_group_id'], unique=False)

    op.create_table('port_security_groups',
    sa.Column('port_id', sa.String(length=36), nullable=False),
    sa.Column('security_group_id', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['port_id'], ['ports.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['security_group_id'], ['security_groups.id'], ),
    sa.PrimaryKeyConstraint('port_id', 'security_group_id')
    )
    with op.batch_alter_table('port_security_groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_port_security_groups_security_group_id'), ['security_group_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('port_security_groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_port_security_groups_security_group_id'))

    op.drop_table('port_security_groups')
    with op.batch_alter_table('security_group_rules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_security_group_rules_security_group_id'))
        batch_op.drop_index(batch_op.f('ix_security_group_rules_remote_group_id'))

    op.drop_table('security_group_rules')
    with op.batch_alter_table('security_groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_security_groups_project_id'))

    op.drop_table('security_groups')
