"""per-node credentials: agent tokens bound to a node, the controller's credential per node, maintenance

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('joined_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('maintenance', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('credential_encrypted', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('pending_credential_encrypted', sa.Text(), nullable=True))
    # Nodes that reported before this revision have joined.
    op.execute("UPDATE nodes SET joined_at = created_at")

    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('node_id', sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f('ix_tokens_node_id'), ['node_id'], unique=False)
        batch_op.create_foreign_key('fk_tokens_node_id_nodes', 'nodes', ['node_id'], ['id'], ondelete='CASCADE')
    # Agent tokens were named after their node's hostname by convention: bind those; the others can no
    # longer report (a token is now issued for one node).
    op.execute("UPDATE tokens SET node_id = (SELECT nodes.id FROM nodes WHERE nodes.hostname = tokens.name) "
               "WHERE role = 'agent'")


def downgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_constraint('fk_tokens_node_id_nodes', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_tokens_node_id'))
        batch_op.drop_column('node_id')

    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_column('pending_credential_encrypted')
        batch_op.drop_column('credential_encrypted')
        batch_op.drop_column('maintenance')
        batch_op.drop_column('joined_at')
