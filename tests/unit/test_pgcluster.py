"""The test-suite database machinery itself: `database_url` gives a fresh,
working database for both SQLite and PostgreSQL."""

import socket

import sqlalchemy as sa


def _table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "probe",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
    )


def test_database_roundtrip(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        probe = _table(sa.MetaData())
        with engine.begin() as conn:
            assert sa.inspect(conn).get_table_names() == []  # fresh and empty
            probe.metadata.create_all(conn)
            conn.execute(sa.insert(probe), [{"name": "dpu-0"}, {"name": "dpu-1"}])
        with engine.connect() as conn:
            rows = conn.execute(sa.select(probe.c.name).order_by(probe.c.id)).scalars().all()
        assert rows == ["dpu-0", "dpu-1"]
        expected = "sqlite" if database_url.startswith("sqlite") else "postgresql"
        assert engine.dialect.name == expected
    finally:
        engine.dispose()


def test_databases_are_unique(pg_cluster) -> None:
    a, b = pg_cluster.create_database(), pg_cluster.create_database()
    assert a != b
    for url in (a, b):
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(sa.text("select 1")).scalar() == 1
        finally:
            engine.dispose()
        pg_cluster.drop_database(url)


def test_free_port(free_port) -> None:
    ports = {free_port() for _ in range(5)}
    assert len(ports) == 5
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
