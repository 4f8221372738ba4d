"""pci devices flavors requests and dpus

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pci_flavors',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('dpus',
    sa.Column('card_serial_number', sa.String(length=255), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('node_id', sa.String(length=36), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['nodes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('card_serial_number')
    )
    with op.batch_alter_table('dpus', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dpus_node_id'), ['node_id'], unique=False)

    op.create_table('pci_requests',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('instance_id', sa.String(length=36), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('flavors', sa.JSON(), nullable=False),
    sa.Column('specs', sa.JSON(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('nic_index', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('pci_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pci_requests_instance_id'), ['instance_id'], unique=False)

    op.create_table('pci_devices',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('node_id', sa.String(length=36), nullable=False),
    sa.Column('address', sa.String(length=32), nullable=False),
    sa.Column('vendor_id', sa.String(length=8), nullable=False),
    sa.Column('product_id', sa.String(length=8), nullable=False),
    sa.Column('dev_type', sa.String(length=16), nullable=False),
    sa.Column('parent_addr', sa.String(length=32), nullable=True),
    sa.Column('numa_node', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('removed', sa.Boolean(), nullable=False),
    sa.Column('instance_id', sa.String(length=36), nullable=True),
    sa.Column('request_id', sa.String(length=36), nullable=True),
    sa.Column('info', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['node_id'], ['nodes.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['request_id'], ['pci_requests.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('node_id', 'address', name='uq_pci_devices_node_address')
    )
    with op.batch_alter_table('pci_devices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pci_devices_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_pci_devices_node_id'), ['node_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_pci_devices_request_id'), ['request_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_pci_devices_status'), ['status'], unique=False)

    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('traits', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('pci_flavor_attrs', sa.JSON(), nullable=False, server_default='[]'))

    with op.batch_alter_table('ports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requested_chassis', sa.String(length=255), nullable=False, server_default=''))



def downgrade() -> None:
    with op.batch_alter_table('ports', schema=None) as batch_op:
        batch_op.drop_column('requested_chassis')

    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_column('pci_flavor_attrs')
        batch_op.drop_column('traits')

    with op.batch_alter_table('pci_devices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pci_devices_status'))
        batch_op.drop_index(batch_op.f('ix_pci_devices_request_id'))
        batch_op.drop_index(batch_op.f('ix_pci_devices_node_id'))
        batch_op.drop_index(batch_op.f('ix_pci_devices_instance_id'))

    op.drop_table('pci_devices')
    with op.batch_alter_table('pci_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pci_requests_instance_id'))

    op.drop_table('pci_requests')
    with op.batch_alter_table('dpus', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dpus_node_id'))

    op.drop_table('dpus')
    op.drop_table('pci_flavors')
