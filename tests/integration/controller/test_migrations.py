"""Migrations on SQLite and PostgreSQL: each one upgrades a database holding rows, and downgrades again."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from dpustack.db.models import Base
from dpustack.db.session import downgrade, make_engine, migrate


def _insert(connection: sa.Connection, table_name: str, **values: Any) -> None:
    """A row of the table as the schema is now: the given values, and a plain one for every other column
    that must have one."""
    table = sa.Table(table_name, sa.MetaData(), autoload_with=connection)
    for column in table.columns:
        if column.name in values or column.nullable or column.server_default is not None:
            continue
        kind = column.type
        values[column.name] = (datetime.now(timezone.utc) if isinstance(kind, sa.DateTime)
                               else False if isinstance(kind, sa.Boolean)
                               else 0 if isinstance(kind, sa.Integer)
                               else [] if isinstance(kind, sa.JSON) else "x")
    connection.execute(table.insert().values(**values))


def _columns(connection: sa.Connection, table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(connection).get_columns(table)}


def test_0008_gives_nodes_their_cells_and_instances_their_placement_and_takes_them_back(database_url):
    engine = make_engine(database_url)
    migrate(engine, "0007")
    with engine.begin() as connection:
        _insert(connection, "projects", id="p1", name="p")
        _insert(connection, "nodes", id="n1", hostname="dpu-vm-1", node_type="vm")
        _insert(connection, "instances", id="i1", name="v1", project_id="p1", node_id="n1", status="ACTIVE")

    migrate(engine, "0008")
    nodes, instances = (sa.Table(name, sa.MetaData(), autoload_with=engine) for name in ("nodes", "instances"))
    with engine.begin() as connection:
        assert connection.execute(sa.select(nodes.c.numa_cells)).scalar_one() == []  # the next report fills them
        assert connection.execute(sa.select(instances.c.numa_placement)).scalar_one() is None
        cells = [{"id": 0, "cpus": [0, 1], "memory_mib": 1024}]
        connection.execute(nodes.update().values(numa_cells=cells))
        connection.execute(instances.update().values(numa_placement={"pinned": True, "cells": []}))
        assert connection.execute(sa.select(nodes.c.numa_cells)).scalar_one() == cells

    downgrade(engine, "0007")
    with engine.connect() as connection:
        assert "numa_cells" not in _columns(connection, "nodes")
        assert "numa_placement" not in _columns(connection, "instances")
        assert connection.execute(sa.text("SELECT hostname FROM nodes")).scalar_one() == "dpu-vm-1"
        assert connection.execute(sa.text("SELECT name FROM instances")).scalar_one() == "v1"

    migrate(engine)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


def test_0009_gives_nodes_a_not_ready_reason_and_takes_it_back(database_url):
    engine = make_engine(database_url)
    migrate(engine, "0008")
    with engine.begin() as connection:
        _insert(connection, "nodes", id="n1", hostname="dpu-vm-1", node_type="vm")

    migrate(engine, "0009")
    nodes = sa.Table("nodes", sa.MetaData(), autoload_with=engine)
    with engine.begin() as connection:
        assert connection.execute(sa.select(nodes.c.not_ready_reason)).scalar_one() == ""  # the next report says
        connection.execute(nodes.update().values(not_ready_reason="its host's NUMA cells are not usable: ..."))

    downgrade(engine, "0008")
    with engine.connect() as connection:
        assert "not_ready_reason" not in _columns(connection, "nodes")
        assert connection.execute(sa.text("SELECT hostname FROM nodes")).scalar_one() == "dpu-vm-1"

    migrate(engine)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


def test_0010_gives_instances_what_they_had_before_a_resize_and_takes_it_back(database_url):
    engine = make_engine(database_url)
    migrate(engine, "0009")
    with engine.begin() as connection:
        _insert(connection, "projects", id="p1", name="p")
        _insert(connection, "instances", id="i1", name="v1", project_id="p1", status="ACTIVE")

    migrate(engine, "0010")
    instances = sa.Table("instances", sa.MetaData(), autoload_with=engine)
    with engine.begin() as connection:
        assert connection.execute(sa.select(instances.c.resize_from)).scalar_one() is None  # no resize
        connection.execute(instances.update().values(resize_from={"vcpus": 2, "ram": 1024}))
        assert connection.execute(sa.select(instances.c.resize_from)).scalar_one() == {"vcpus": 2, "ram": 1024}

    downgrade(engine, "0009")
    with engine.connect() as connection:
        assert "resize_from" not in _columns(connection, "instances")
        assert connection.execute(sa.text("SELECT name FROM instances")).scalar_one() == "v1"
    engine.dispose()


def test_0011_gives_volumes_a_second_attachment_for_a_move_and_takes_it_back(database_url):
    engine = make_engine(database_url)
    migrate(engine, "0010")
    with engine.begin() as connection:
        _insert(connection, "projects", id="p1", name="p")
        _insert(connection, "volumes", id="v1", name="data1", project_id="p1", size=1, status="in-use",
                attachment_id="a1")

    migrate(engine, "0011")
    volumes = sa.Table("volumes", sa.MetaData(), autoload_with=engine)
    with engine.begin() as connection:
        assert connection.execute(sa.select(volumes.c.move_attachment)).scalar_one() is None  # on one node
        connection.execute(volumes.update().values(move_attachment={"attachment_id": "a2", "node": "dpu-vm-2"}))
        assert connection.execute(sa.select(volumes.c.move_attachment)).scalar_one()["attachment_id"] == "a2"

    downgrade(engine, "0010")
    with engine.connect() as connection:
        assert "move_attachment" not in _columns(connection, "volumes")
        assert connection.execute(sa.text("SELECT attachment_id FROM volumes")).scalar_one() == "a1"
    engine.dispose()
