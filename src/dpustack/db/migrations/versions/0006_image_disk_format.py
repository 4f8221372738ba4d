"""images: the claimed disk format and the virtual size qemu-img found

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disk_format', sa.String(length=16), nullable=False, server_default='raw'))
        batch_op.add_column(sa.Column('virtual_size', sa.BigInteger(), nullable=False, server_default='0'))
    # Images uploaded before were taken as raw: their disk is their bytes.
    op.execute("UPDATE images SET virtual_size = size")


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_column('virtual_size')
        batch_op.drop_column('disk_format')
