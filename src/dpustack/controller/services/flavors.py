"""Flavors: the sizes instances are built with. Readable by all, written by admins."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.controller.numa_fit import is_numa_spec
from dpustack.controller.services import numa, pci_flavors
from dpustack.controller.services.common import find
from dpustack.db.models import Flavor, Instance
from dpustack.errors import Conflict, NotFound
from dpustack.pci.requests import EXTRA_SPEC, NUMA_POLICY_SPEC, numa_policy, parse_pci_flavor_spec


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
    resizing = session.scalars(select(Instance).where(Instance.resize_from.is_not(None),
                                                      Instance.deleted.is_(False)))
    if (held := next((i for i in resizing if (i.resize_from or {}).get("flavor_id") == flavor.id), None)):
        raise Conflict(f"flavor '{flavor.name}' is the old flavor of instance {held.id}, whose resize waits for a "
                       "confirm or revert", field="flavor")
    session.delete(flavor)


def set_extra_specs(session: Session, ref: str, specs: dict[str, str]) -> Flavor:
    """Merge extra specs into a flavor, validating the PCI ones (`pci_passthrough:pci_flavor`) and the NUMA
    ones (`hw:cpu_policy`, `hw:numa_nodes`, ...: the flavor's specs as they would be must make a NUMA
    request); a bad one is a 400 naming its key, and nothing changes."""
    flavor = get_flavor(session, ref)
    merged = {**(flavor.extra_specs or {}), **specs}
    if any(is_numa_spec(key) for key in specs):
        numa.check_specs(flavor, merged)
    for key, value in specs.items():
        if key == EXTRA_SPEC:
            for request in parse_pci_flavor_spec(value, field=key):
                pci_flavors.specs_for(session, request.flavors, field=key)
        elif key == NUMA_POLICY_SPEC:
            numa_policy({key: value})
    flavor.extra_specs = merged
    return flavor


def unset_extra_spec(session: Session, ref: str, key: str) -> Flavor:
    """Remove one extra spec. Not checked: NUMA specs that only go together (`hw:numa_nodes` and its
    `hw:numa_cpus.N`) are removed one at a time; a VM flavor left with a partial set is refused when a
    server is created from it (400 naming `flavor.<key>`), and so is the next NUMA spec set on it."""
    flavor = get_flavor(session, ref)
    if key not in (flavor.extra_specs or {}):
        raise NotFound(f"flavor '{flavor.name}' has no extra spec '{key}'", field="key")
    flavor.extra_specs = {k: v for k, v in flavor.extra_specs.items() if k != key}
    return flavor
