"""The agent's local store: the desired state of this node, in SQLite (<state_dir>/agent.db).

Each row is something the agent wants to exist (``desired = "present"``) or
is in the middle of removing (``"absent"``: a tombstone, so a crash between
"forget" and "remove from the hardware" neither loses nor resurrects it).
Records are plain mapped objects, detached from any session once returned.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import JSON, Engine, String, create_engine, event, inspect, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

PRESENT = "present"
ABSENT = "absent"
#: the key of an instance record's spec while the instance migrates live away from this node (the target's
#: hypervisor URI): its domain may be gone, and is not defined here again
LEAVING = "leaving"
#: the key of an instance record's spec once its live migration away from this node is done: the driver's
#: measures (``MigrationResult``), answered again to a controller that asks for that migration again
LEFT = "left"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of the agent's own tables (separate from the controller's)."""


class FunctionRecord(Base):
    """A PF/VF this node should have; ``bdf`` and ``representor`` as last observed."""

    __tablename__ = "functions"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    slot: Mapped[int] = mapped_column(unique=True)
    type: Mapped[str] = mapped_column(String(2))
    kind: Mapped[str] = mapped_column(String(16))
    mac: Mapped[str | None] = mapped_column(String(17))
    features: Mapped[list[str]] = mapped_column(JSON, default=list)
    bdf: Mapped[str | None] = mapped_column(String(16))
    representor: Mapped[str | None] = mapped_column(String(64))
    instance_uuid: Mapped[str | None] = mapped_column(String(128), index=True)
    port_id: Mapped[str | None] = mapped_column(String(128))
    volume_id: Mapped[str | None] = mapped_column(String(128))
    desired: Mapped[str] = mapped_column(String(8), default=PRESENT)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class PortBinding(Base):
    """A cloud port plugged into the switch as ``bridge``/``port_name``."""

    __tablename__ = "port_bindings"

    port_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    bridge: Mapped[str] = mapped_column(String(15))
    port_name: Mapped[str] = mapped_column(String(64), unique=True)
    function_id: Mapped[str | None] = mapped_column(String(128))
    mac: Mapped[str | None] = mapped_column(String(17))
    instance_uuid: Mapped[str | None] = mapped_column(String(128), index=True)
    # The cloud network of the port: this node serves metadata on every network it has a port on.
    network_id: Mapped[str | None] = mapped_column(String(128))
    # What the port's instance may send, in packets/s (None: unlimited); the reconcile re-applies it.
    qos_pps: Mapped[int | None] = mapped_column(default=None)
    desired: Mapped[str] = mapped_column(String(8), default=PRESENT)
    created_at: Mapped[datetime] = mapped_column(default=_now)

    @property
    def external_ids(self) -> dict[str, str]:
        """What the switch port carries so the network controller can find the cloud port."""
        ids = {"iface-id": self.port_id}
        if self.mac:
            ids["attached-mac"] = self.mac
        return ids


class VolumeBinding(Base):
    """A volume served to the host through a storage function."""

    __tablename__ = "volume_bindings"

    volume_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    function_id: Mapped[str] = mapped_column(String(128))
    uri: Mapped[str] = mapped_column(String(1024))
    bootable: Mapped[bool] = mapped_column(default=False)
    instance_uuid: Mapped[str | None] = mapped_column(String(128), index=True)
    desired: Mapped[str] = mapped_column(String(8), default=PRESENT)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class InstanceRecord(Base):
    """An instance deployed on this node (``ram`` in MiB)."""

    __tablename__ = "instances"

    uuid: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    power: Mapped[str] = mapped_column(String(3))
    vcpus: Mapped[int]
    ram: Mapped[int]
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    fault: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(default=_now)


R = TypeVar("R", bound=Base)


class AgentStore:
    """Small repository over the agent database; every method is one transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._engine = create_engine(f"sqlite:///{self.path}", connect_args={"check_same_thread": False})
        event.listen(self._engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self._engine)
        _add_new_columns(self._engine)
        self._session = sessionmaker(self._engine, expire_on_commit=False)

    def close(self) -> None:
        self._engine.dispose()

    def get(self, model: type[R], key: str) -> R | None:
        """The record with primary key ``key``, or None."""
        with self._session() as session:
            return session.get(model, key)

    def find(self, model: type[R], **where: Any) -> list[R]:
        """Records whose columns equal ``where``, oldest first."""
        query = select(model).filter_by(**where).order_by(model.created_at)  # type: ignore[attr-defined]
        with self._session() as session:
            return list(session.scalars(query))

    def put(self, record: R) -> R:
        """Insert or replace ``record``; return the stored copy."""
        with self._session.begin() as session:
            stored = session.merge(record)
        return stored

    def update(self, model: type[R], key: str, **fields: Any) -> R:
        """Change some columns of an existing record; return it."""
        with self._session.begin() as session:
            record = session.get(model, key)
            if record is None:
                raise LookupError(f"no {model.__tablename__} record '{key}'")
            for name, value in fields.items():
                setattr(record, name, value)
        return record

    def remove(self, model: type[R], key: str) -> None:
        """Delete the record if it is there."""
        with self._session.begin() as session:
            record = session.get(model, key)
            if record is not None:
                session.delete(record)

    def free_slot(self, taken: set[int], prefer: int | None = None) -> int:
        """``prefer`` if neither recorded here nor in ``taken``, else the smallest function slot that is neither."""
        with self._session() as session:
            used = set(session.scalars(select(FunctionRecord.slot))) | taken
        if prefer is not None and prefer not in used:
            return prefer
        return next(slot for slot in range(len(used) + 1) if slot not in used)


def _add_new_columns(engine: Engine) -> None:
    """Add the (nullable) columns a newer agent knows to tables an older one created."""
    inspector = inspect(engine)
    with engine.begin() as connection:
        for table in Base.metadata.sorted_tables:
            have = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have and column.nullable:
                    kind = column.type.compile(dialect=engine.dialect)
                    connection.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
