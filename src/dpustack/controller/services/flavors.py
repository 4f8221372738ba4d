"""Flavors: the sizes instances are built with. Readable by all, written by admins."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.controller.services.common import find
from dpustack.db.models import Flavor, Instance
from dpustack.errors import Conflict


def create_flavor(session: Session, *, name: str, vcpus: int, ram: int, disk: int, type: str) -> Flavor:
    if session.scalars(select(Flavor).where(Flavor.name == name)).first() is not None:
        raise Conflict(f"a flavor named '{name}' already exists", field="name")
    flavor = Flavor(name=name, vcpus=vcpus, ram=ram, disk=disk, type=type, extra_specs={})
    session.add(flavor)
    session.flush()
    return flavor


def list_flavors(session: Session) -> list[Flavor]:
    return list(session.scalars(select(Flavor).order_by(Flavor.name)))


def get_flavor(session: Session, ref: str, *, field: str = "flavor") -> Flavor:
    return find(session, Flavor, ref, None, kind="flavor", field=field)


def delete_flavor(session: Session, ref: str) -> None:
    flavor = get_flavor(session, ref)
    in_use = session.scalars(select(Instance.id).where(Instance.flavor_id == flavor.id,
                                                       Instance.deleted.is_(False))).first()
    if in_use:
        raise Conflict(f"flavor '{flavor.name}' is used by instance {in_use}", field="flavor")
    session.delete(flavor)
