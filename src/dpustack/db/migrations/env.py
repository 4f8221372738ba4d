"""Alembic environment: runs on the connection dpustack hands over (see db.session.migrate)."""

from alembic import context

from dpustack.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through dpustack.db.session.migrate()")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
