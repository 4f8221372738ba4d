"""Security groups and their rules (Neutron semantics), project-scoped like networks.

A group is a set of allow rules; a port in one or more groups receives and
sends only what some rule of its groups allows (replies to allowed traffic
included: the backend tracks connections). Every project gets a `default`
group the first time one is needed: it allows all egress and ingress from
the group's own members, and ports that name no group are put in it. A new
group starts, as in Neutron, with rules allowing all egress.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dpustack.controller.netbackend import NetworkBackend, RuleSpec, SecurityGroupSpec
from dpustack.controller.services.common import Caller, ensure_unique_name, find, scoped
from dpustack.db.models import PortSecurityGroup, SecurityGroup, SecurityGroupRule
from dpustack.errors import Conflict, InvalidInput, NotFound

DEFAULT = "default"
ETHERTYPES = ("IPv4", "IPv6")
PORT_PROTOCOLS = ("tcp", "udp")
_ANY = {"IPv4": "0.0.0.0/0", "IPv6": "::/0"}


def spec(group: SecurityGroup) -> SecurityGroupSpec:
    """What the network backend needs to know about a group: its id, name and every rule."""
    return SecurityGroupSpec(id=group.id, name=group.name, rules=tuple(
        RuleSpec(id=r.id, direction=r.direction, ethertype=r.ethertype, protocol=r.protocol,
                 port_range_min=r.port_range_min, port_range_max=r.port_range_max,
                 remote_ip_prefix=r.remote_ip_prefix, remote_group_id=r.remote_group_id)
        for r in group.rules))


# -- groups -------------------------------------------------------------------------
def ensure_default_group(session: Session, backend: NetworkBackend, project_id: str) -> SecurityGroup:
    """The project's `default` group, made (in the database and the backend) on first need."""
    found = _default_of(session, project_id)
    if found is not None:
        return found
    group = SecurityGroup(name=DEFAULT, project_id=project_id, description="Default security group")
    try:
        with session.begin_nested():  # another request may make it at the same moment
            session.add(group)
            session.flush()
    except IntegrityError:
        found = _default_of(session, project_id)
        if found is None:
            raise
        return found
    for ethertype in ETHERTYPES:
        group.rules.append(SecurityGroupRule(direction="egress", ethertype=ethertype))
        group.rules.append(SecurityGroupRule(direction="ingress", ethertype=ethertype, remote_group_id=group.id))
    session.flush()
    backend.ensure_security_group(spec(group))
    return group


def _default_of(session: Session, project_id: str) -> SecurityGroup | None:
    return session.scalars(select(SecurityGroup).where(SecurityGroup.project_id == project_id,
                                                       SecurityGroup.name == DEFAULT)).first()


def create_group(session: Session, caller: Caller, backend: NetworkBackend, *, name: str,
                 description: str = "") -> SecurityGroup:
    if name == DEFAULT:
        raise Conflict("every project has a security group named 'default' already", field="name")
    ensure_unique_name(session, SecurityGroup, name, caller.project_id, kind="security group")
    group = SecurityGroup(name=name, description=description, project_id=caller.project_id)
    session.add(group)
    session.flush()
    for ethertype in ETHERTYPES:
        group.rules.append(SecurityGroupRule(direction="egress", ethertype=ethertype))
    session.flush()
    backend.ensure_security_group(spec(group))
    return group


def get_group(session: Session, caller: Caller, backend: NetworkBackend, ref: str, *,
              field: str = "security_group") -> SecurityGroup:
    if ref == DEFAULT:
        ensure_default_group(session, backend, caller.project_id)
    return find(session, SecurityGroup, ref, caller, kind="security group", field=field)


def list_groups(session: Session, caller: Caller, backend: NetworkBackend) -> list[SecurityGroup]:
    ensure_default_group(session, backend, caller.project_id)
    query = scoped(select(SecurityGroup), SecurityGroup, caller).order_by(SecurityGroup.created_at)
    return list(session.scalars(query))


def delete_group(session: Session, caller: Caller, backend: NetworkBackend, ref: str) -> None:
    """Delete a group no port uses; rules of other groups that name it as remote go with it (as in Neutron)."""
    group = _locked(session, find(session, SecurityGroup, ref, caller, kind="security group",
                                  field="security_group"))
    if group.name == DEFAULT:
        raise Conflict("the default security group cannot be deleted", field="security_group")
    port_id = session.scalars(select(PortSecurityGroup.port_id)
                              .where(PortSecurityGroup.security_group_id == group.id)).first()
    if port_id:
        raise Conflict(f"security group '{group.name}' is used by port {port_id}", field="security_group")
    referring = session.scalars(select(SecurityGroupRule).where(SecurityGroupRule.remote_group_id == group.id,
                                                                SecurityGroupRule.security_group_id != group.id)).all()
    touched = {rule.security_group.id: rule.security_group for rule in referring}
    for rule in referring:
        rule.security_group.rules.remove(rule)
    session.delete(group)
    session.flush()
    for other in touched.values():  # first stop referring to its address set, then remove it
        backend.ensure_security_group(spec(other))
    backend.delete_security_group(group.id)


# -- rules --------------------------------------------------------------------------
def add_rule(session: Session, caller: Caller, backend: NetworkBackend, group_ref: str,
             body: dict[str, Any]) -> SecurityGroupRule:
    """Validate a rule (400 naming the field), refuse a duplicate (409), then sync the group."""
    group = _locked(session, get_group(session, caller, backend, group_ref))
    rule = SecurityGroupRule(direction=body["direction"], ethertype=body.get("ethertype") or "IPv4",
                             protocol=body.get("protocol"))
    rule.port_range_min, rule.port_range_max = _port_range(rule.protocol, body.get("port_range_min"),
                                                           body.get("port_range_max"))
    if body.get("remote_ip_prefix") is not None and body.get("remote_group") is not None:
        raise InvalidInput("give remote_ip_prefix or remote_group, not both", field="remote_group")
    if body.get("remote_ip_prefix") is not None:
        rule.remote_ip_prefix = _prefix(body["remote_ip_prefix"], rule.ethertype)
    if body.get("remote_group") is not None:
        rule.remote_group_id = _group_in_project(session, backend, group.project_id, body["remote_group"],
                                                 field="remote_group").id
    duplicate = next((r for r in group.rules if _same(r, rule)), None)
    if duplicate is not None:
        raise Conflict(f"security group '{group.name}' already has this rule ({duplicate.id})", field="rule")
    group.rules.append(rule)
    session.flush()
    backend.ensure_security_group(spec(group))
    return rule


def delete_rule(session: Session, caller: Caller, backend: NetworkBackend, rule_id: str) -> None:
    query = select(SecurityGroupRule).join(SecurityGroup, SecurityGroupRule.security_group_id == SecurityGroup.id)
    rule = session.scalars(scoped(query.where(SecurityGroupRule.id == rule_id), SecurityGroup, caller)).first()
    if rule is None:
        raise NotFound(f"security group rule '{rule_id}' not found", field="security_group_rule")
    group = _locked(session, rule.security_group)
    group.rules.remove(rule)
    session.flush()
    backend.ensure_security_group(spec(group))


def _locked(session: Session, group: SecurityGroup) -> SecurityGroup:
    """Lock the group's row (PostgreSQL; SQLite transactions are serial anyway) and re-read its rules.

    Every change syncs the group's whole rule set to the backend, so two changes at once must not
    each send a set that lacks the other's rule; and a port added to a group as it is deleted waits
    (its foreign key check) and then fails, instead of keeping a group the backend no longer has.
    """
    session.refresh(group, with_for_update=True)
    session.expire(group, ["rules"])
    return group


def _port_range(protocol: str | None, low: int | None, high: int | None) -> tuple[int | None, int | None]:
    if low is None and high is None:
        return None, None
    if protocol not in PORT_PROTOCOLS:
        field = "port_range_min" if low is not None else "port_range_max"
        raise InvalidInput(f"ports can only be given with protocol tcp or udp, not {protocol or 'any'}",
                           field=field)
    if low is None:
        raise InvalidInput("port_range_max needs port_range_min", field="port_range_min")
    high = low if high is None else high
    if low > high:
        raise InvalidInput(f"port_range_max ({high}) is below port_range_min ({low})", field="port_range_max")
    return low, high


def _prefix(text: str, ethertype: str) -> str:
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise InvalidInput(f"'{text}' is not a valid CIDR: {exc}", field="remote_ip_prefix") from exc
    if f"IPv{network.version}" != ethertype:
        raise InvalidInput(f"{network} is not an {ethertype} prefix", field="remote_ip_prefix")
    return str(network)


def _same(a: SecurityGroupRule, b: SecurityGroupRule) -> bool:
    """Two rules allow the same traffic (`0.0.0.0/0` is the same as no prefix)."""
    def key(r: SecurityGroupRule) -> tuple[Any, ...]:
        prefix = None if r.remote_ip_prefix == _ANY.get(r.ethertype) else r.remote_ip_prefix
        return (r.direction, r.ethertype, r.protocol, r.port_range_min, r.port_range_max, prefix,
                r.remote_group_id)
    return key(a) == key(b)


# -- ports' groups --------------------------------------------------------------------
def _group_in_project(session: Session, backend: NetworkBackend, project_id: str, ref: str, *,
                      field: str) -> SecurityGroup:
    if ref == DEFAULT:
        return ensure_default_group(session, backend, project_id)
    return find(session, SecurityGroup, ref, None, kind="security group", field=field,
                extra=SecurityGroup.project_id == project_id)


def groups_for_port(session: Session, backend: NetworkBackend, project_id: str, refs: list[str] | None, *,
                    field: str = "security_groups") -> list[SecurityGroup]:
    """The groups a port of `project_id` asks for (names or ids of that project's groups); none: `default`."""
    if refs is None:
        return [ensure_default_group(session, backend, project_id)]
    if not refs:
        raise InvalidInput("give at least one security group", field=field)
    groups: dict[str, SecurityGroup] = {}
    for index, ref in enumerate(refs):
        group = _group_in_project(session, backend, project_id, ref, field=f"{field}.{index}")
        groups.setdefault(group.id, group)
    return list(groups.values())


def check_refs(session: Session, project_id: str, refs: list[str] | None, *, field: str) -> list[str] | None:
    """Check groups named in a request whose ports are made later: their ids (`default` stays as is)."""
    if refs is None:
        return None
    if not refs:
        raise InvalidInput("give at least one security group", field=field)
    ids = []
    for index, ref in enumerate(refs):
        if ref == DEFAULT:
            ids.append(DEFAULT)
            continue
        ids.append(find(session, SecurityGroup, ref, None, kind="security group", field=f"{field}.{index}",
                        extra=SecurityGroup.project_id == project_id).id)
    return list(dict.fromkeys(ids))
