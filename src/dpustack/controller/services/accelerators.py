"""Accelerators (the Cyborg model): the agents discover, the controller alone writes.

A node's agent reports what its accelerator drivers found (`record_reported`): a new one is stored
``inactive`` under a name made of its node and its key, a known one takes the reported fields and state, one
no longer reported is marked ``missing`` (never dropped: it may be attached). A project may also register an
accelerator of its own (`register`, the seed's ``POST``: a name, an optional uuid; ``registered``, held by
that project); only those have specs that the API changes (`update_specs`), a discovered one's are its
driver's.

Attaching (`attach`) gives an accelerator to the caller's project, on the host it is installed on; of two
concurrent attaches exactly one wins (a conditional UPDATE). Changing specs names the revision read (the
ETag, or the one just read): of two concurrent updates exactly one wins, the other is a 409.

Who sees what: an admin every accelerator; a member the ones its project holds and the discovered ones no
project holds (to attach them); another project's are a 404 to it.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from dpustack.contract.accelerators import AcceleratorSpecs, ReportedAccelerator
from dpustack.controller.services.common import Caller
from dpustack.db.models import Accelerator, Node, utcnow
from dpustack.errors import Conflict, InvalidInput, NotFound

REGISTERED, MISSING = "registered", "missing"
#: states in which an accelerator can be attached: installed on its node, or registered through the API
ATTACHABLE = ("available", REGISTERED)
#: what ``PUT /accelerators/{uuid}/{acc_spec}`` may name: the whole specs, or one of their fields
SPEC_NAMES = ("acc_specs", *AcceleratorSpecs.model_fields)


def record_reported(session: Session, node: Node, reported: list[ReportedAccelerator] | None) -> None:
    """Store what the node's agent discovered (None: the agent does not discover accelerators; nothing
    changes). Specs that changed count as a new revision."""
    if reported is None:
        return
    keys = [item.key for item in reported]
    if len(set(keys)) != len(keys):
        twice = sorted({key for key in keys if keys.count(key) > 1})
        raise InvalidInput(f"accelerators: key {twice[0]} is reported twice", field="accelerators")
    known = {row.key: row for row in session.scalars(select(Accelerator).where(Accelerator.node_id == node.id))}
    for item in reported:
        row = known.pop(item.key, None)
        if row is None:
            row = Accelerator(node_id=node.id, key=item.key, name=_discovered_name(node.hostname, item.key),
                              acc_specs={}, revision=1)
            session.add(row)
        values = {"family": item.family, "address": item.address, "vendor_id": item.vendor_id,
                  "product_id": item.product_id, "numa_node": item.numa_node, "acc_specs": item.specs.model_dump(),
                  "resource_class": item.resource_class, "traits": list(item.traits), "state": item.state,
                  "fault": item.fault}
        changed = {key: value for key, value in values.items() if getattr(row, key) != value}
        if not changed:
            continue  # the usual report: nothing written
        if "acc_specs" in changed and row.acc_specs:
            row.revision += 1
        for key, value in changed.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
    for row in known.values():
        if row.state != MISSING:
            row.state, row.fault, row.updated_at = MISSING, "its node no longer reports it", utcnow()


def _discovered_name(hostname: str, key: str) -> str:
    """``<hostname>.<key>``, every character the name rule refuses made a '-': e.g.
    ``dpu-bm-1.gpu-0000-3b-00.0``."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"{hostname}.{key}")[:255]


def _visible(caller: Caller) -> ColumnElement[bool]:
    if caller.is_admin:
        return Accelerator.id.is_not(None)
    return or_(Accelerator.project_id == caller.project_id,
               and_(Accelerator.project_id.is_(None), Accelerator.node_id.is_not(None)))


def list_accelerators(session: Session, caller: Caller) -> list[Accelerator]:
    """The accelerators the caller may see, by node then name (registered ones first)."""
    return list(session.scalars(select(Accelerator).where(_visible(caller))
                                .order_by(Accelerator.node_id.is_not(None), Accelerator.name)))


def get_accelerator(session: Session, caller: Caller, ref: str) -> Accelerator:
    """One accelerator by uuid (or name) among those the caller may see; 404 naming ``uuid`` otherwise."""
    row = session.scalars(select(Accelerator).where(_visible(caller),
                                                    or_(Accelerator.id == ref, Accelerator.name == ref))).first()
    if row is None:
        raise NotFound(f"accelerator '{ref}' not found", field="uuid")
    return row


def register(session: Session, caller: Caller, name: str, uuid: str | None) -> Accelerator:
    """A new accelerator of the caller's project, ``registered``, with no specs yet; 409 naming ``name`` (or
    ``uuid``) if one has it already."""
    if session.scalars(select(Accelerator.id).where(Accelerator.name == name)).first() is not None:
        raise Conflict(f"an accelerator named '{name}' exists already", field="name")
    ident = uuid or str(uuidlib.uuid4())
    if session.get(Accelerator, ident) is not None:
        raise Conflict(f"an accelerator with uuid {ident} exists already", field="uuid")
    row = Accelerator(id=ident, name=name, state=REGISTERED, project_id=caller.project_id, acc_specs={})
    session.add(row)
    session.flush()
    return row


def update_specs(session: Session, caller: Caller, ref: str, spec: str, body: dict[str, Any],
                 revision: int | None) -> Accelerator:
    """Replace the specs (``spec`` = ``acc_specs``, body ``{"acc_specs": {...}}``) or one of their fields
    (body ``{"<field>": value}``) of a registered accelerator, if its revision is still ``revision`` (None:
    the one read now); 409 if another writer changed it first."""
    row = get_accelerator(session, caller, ref)
    if spec not in SPEC_NAMES:
        raise NotFound(f"accelerator '{ref}' has no spec '{spec}': one of {', '.join(SPEC_NAMES)}",
                       field="acc_spec")
    if row.node_id is not None:
        raise Conflict(f"the specs of accelerator '{row.name}' are its node's driver's (discovered); only a "
                       "registered accelerator's change", field="acc_spec")
    if set(body) != {spec}:
        raise InvalidInput(f"give the body {{\"{spec}\": ...}}, nothing else", field=spec)
    value = body[spec]
    if spec == "acc_specs" and not isinstance(value, dict):
        raise InvalidInput("acc_specs: give an object", field="acc_specs")
    specs = value if spec == "acc_specs" else {**(row.acc_specs or {}), spec: value}
    try:
        checked = AcceleratorSpecs.model_validate(specs).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in ("acc_specs", *first["loc"]))
        raise InvalidInput(f"{where}: {first['msg']}", field=where) from None
    expected = row.revision if revision is None else revision
    done = session.execute(update(Accelerator).where(Accelerator.id == row.id, Accelerator.revision == expected)
                           .values(acc_specs=checked, revision=expected + 1, updated_at=utcnow())
                           .execution_options(synchronize_session=False))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"accelerator '{row.name}' was changed by another writer since revision {expected}; "
                       "read it again", field="acc_spec")
    session.refresh(row)
    return row


def attach(session: Session, caller: Caller, ref: str, name: str, uuid: str | None) -> Accelerator:
    """Attach the accelerator (named by the body's ``name`` and ``uuid`` too) to the caller's project on the
    host it is installed on; 409 if it is attached already or not ready to be."""
    row = get_accelerator(session, caller, ref)
    if uuid is not None and uuid != row.id:
        raise InvalidInput(f"uuid: {uuid} is not the accelerator's ({row.id})", field="uuid")
    if name != row.name:
        raise InvalidInput(f"name: '{name}' is not the accelerator's ('{row.name}')", field="name")
    if row.state not in ATTACHABLE:
        raise Conflict(f"accelerator '{row.name}' is {row.state}: an operator sets it ready and its driver "
                       "installs it first", field="uuid")
    done = session.execute(update(Accelerator).where(Accelerator.id == row.id, Accelerator.attached.is_(None),
                                                     Accelerator.state.in_(ATTACHABLE),
                                                     or_(Accelerator.project_id.is_(None),
                                                         Accelerator.project_id == caller.project_id))
                           .values(attached="host", project_id=caller.project_id, updated_at=utcnow())
                           .execution_options(synchronize_session=False))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"accelerator '{row.name}' is attached already", field="uuid")
    session.refresh(row)
    return row


def detach(session: Session, caller: Caller, ref: str) -> None:
    """Detach it from the host (nothing to do if it is not attached): a discovered one is no project's
    any more, a registered one stays its registrant's."""
    row = get_accelerator(session, caller, ref)
    if row.attached is None:
        return
    row.attached, row.updated_at = None, utcnow()
    if row.node_id is not None:
        row.project_id = None
