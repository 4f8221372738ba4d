"""PCI flavors: CRUD, the `_flavor_attrs` entry, and turning requests into needs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.db.models import Flavor, Node, PciFlavor
from dpustack.errors import Conflict, InvalidInput, NotFound
from dpustack.pci import flavors as pci_flavor_rules
from dpustack.pci.flavors import ATTRS_FLAVOR_ID, ATTRS_FLAVOR_NAME, DEFAULT_FLAVOR_ATTRS
from dpustack.pci.requests import EXTRA_SPEC, parse_pci_flavor_spec

DESCRIPTION_KEY = "description"


def flavor_attrs(session: Session) -> list[str]:
    """Every attribute any node groups its pools by: what PCI flavors may be defined with."""
    attrs: set[str] = set()
    for node_attrs in session.scalars(select(Node.pci_flavor_attrs)):
        attrs.update(node_attrs or [])
    return sorted(attrs or DEFAULT_FLAVOR_ATTRS)


def attrs_entry(session: Session) -> dict[str, Any]:
    """The `_flavor_attrs` pseudo flavor, UUID `0`, listing the usable attributes."""
    return {"id": ATTRS_FLAVOR_ID, "name": ATTRS_FLAVOR_NAME, "description": "Available flavor attrs",
            "spec": {attr: "True" for attr in flavor_attrs(session)}}


def view(flavor: PciFlavor) -> dict[str, Any]:
    return {"id": flavor.id, "name": flavor.name, "description": flavor.description, "spec": dict(flavor.spec)}


def get(session: Session, ref: str, *, field: str = "pci_flavor") -> PciFlavor:
    flavor = session.get(PciFlavor, ref) or session.scalars(select(PciFlavor).where(PciFlavor.name == ref)).first()
    if flavor is None:
        raise NotFound(f"PCI flavor '{ref}' not found", field=field)
    return flavor


def show(session: Session, ref: str) -> dict[str, Any]:
    if ref in (ATTRS_FLAVOR_ID, ATTRS_FLAVOR_NAME):
        return attrs_entry(session)
    return view(get(session, ref))


def list_all(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(PciFlavor).order_by(PciFlavor.name))
    return [attrs_entry(session)] + [view(f) for f in rows]


def create(session: Session, *, name: str, description: str) -> PciFlavor:
    if name == ATTRS_FLAVOR_NAME or name == ATTRS_FLAVOR_ID:
        raise InvalidInput(f"'{name}' is reserved", field="name")
    if session.scalars(select(PciFlavor).where(PciFlavor.name == name)).first() is not None:
        raise Conflict(f"a PCI flavor named '{name}' already exists", field="name")
    flavor = PciFlavor(name=name, description=description, spec={})
    session.add(flavor)
    session.flush()
    return flavor


def update(session: Session, ref: str, changes: dict[str, Any]) -> PciFlavor:
    """Update a flavor: the given pairs become the flavor's new definition."""
    if ref in (ATTRS_FLAVOR_ID, ATTRS_FLAVOR_NAME):
        raise InvalidInput("the _flavor_attrs entry follows the nodes' pci_flavor_attrs", field="pci_flavor")
    flavor = get(session, ref)
    changes = dict(changes)
    description = changes.pop(DESCRIPTION_KEY, None)
    changes.pop("name", None)
    if description is not None:
        flavor.description = str(description)
    if changes:
        flavor.spec = pci_flavor_rules.validate_spec(changes, flavor_attrs(session), field="pci-flavor")
    return flavor


def delete(session: Session, ref: str) -> None:
    flavor = get(session, ref)
    for owner in session.scalars(select(Flavor)):
        text = (owner.extra_specs or {}).get(EXTRA_SPEC)
        if text and any(flavor.name in r.flavors for r in parse_pci_flavor_spec(text)):
            raise Conflict(f"PCI flavor '{flavor.name}' is used by flavor '{owner.name}'", field="pci_flavor")
    session.delete(flavor)


def specs_for(session: Session, names: tuple[str, ...], *, field: str) -> list[dict[str, str]]:
    """The definitions behind a request's PCI flavor names; each must exist and be defined."""
    specs = []
    for name in names:
        flavor = get(session, name, field=field)
        if not flavor.spec:
            raise InvalidInput(f"PCI flavor '{name}' has no definition yet (pci-flavor update)", field=field)
        specs.append(dict(flavor.spec))
    return specs
