"""key pairs and instance metadata, subnet options, port QoS

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('keypairs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('project_id', sa.String(length=36), nullable=False),
    sa.Column('public_key', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'name', name='uq_keypairs_project_name')
    )
    with op.batch_alter_table('keypairs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_keypairs_project_id'), ['project_id'], unique=False)

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key_name', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('key_data', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('admin_pass_encrypted', sa.Text(), nullable=True))

    with op.batch_alter_table('subnets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=255), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('dns_nameservers', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('enable_dhcp', sa.Boolean(), nullable=False, server_default=sa.true()))

    with op.batch_alter_table('ports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('qos_bps', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('qos_pps', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ports', schema=None) as batch_op:
        batch_op.drop_column('qos_pps')
        batch_op.drop_column('qos_bps')

    with op.batch_alter_table('subnets', schema=None) as batch_op:
        batch_op.drop_column('enable_dhcp')
        batch_op.drop_column('dns_nameservers')
        batch_op.drop_column('name')

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('admin_pass_encrypted')
        batch_op.drop_column('key_data')
        batch_op.drop_column('key_name')

    with op.batch_alter_table('keypairs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_keypairs_project_id'))

    op.drop_table('keypairs')
