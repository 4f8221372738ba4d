"""The instance metadata service, in OpenStack's layout, as DPU agents' metadata proxies ask for it.

An instance asks `http://169.254.169.254/openstack/...`; the metadata proxy on
the DPU of the node it runs on forwards the request here with its agent token,
the network the request came in on and the request's source address. That
pair, and nothing the instance says, picks the instance: the port with that
address on that network, attached to a live instance and bound to the
calling agent's node (the node its agent token was issued for).

The admin password is kept Fernet-encrypted under the controller's key
(`$DPUSTACK_HOME/secret.key`, mode 0600, made at start-up) and is only ever
decrypted here, for the instance itself: served to it, or (`open_admin_pass`)
sent to the node of a running VM, whose guest agent sets it now.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from dpustack import secrets
from dpustack.controller.services.common import Caller
from dpustack.db.models import Instance, Node, Port
from dpustack.errors import Forbidden, InvalidInput, NotFound
from dpustack.metadata_port import NETWORK_HEADER

log = logging.getLogger(__name__)

SOURCE_HEADER = "X-Forwarded-For"
META_DATA, USER_DATA = "meta_data.json", "user_data"
VERSION = "latest"
HOSTNAME_MAX = 63
_NOT_IN_HOSTNAME = re.compile(r"[^a-z0-9-]")
TEXT, JSON, OCTETS = "text/plain; charset=utf-8", "application/json", "application/octet-stream"


@dataclass(frozen=True)
class Document:
    """One metadata answer: its bytes and their media type."""

    body: bytes
    media_type: str


# -- the admin password --------------------------------------------------------------------
def seal_admin_pass(admin_pass: SecretStr | str | None, key: Path | None) -> str | None:
    """The Fernet token stored for an instance's admin password (None: no password)."""
    if admin_pass is None:
        return None
    if key is None:  # never fall back to a key file from the environment: the metadata could not read it
        raise ValueError("an admin password needs the controller's key file")
    plain = admin_pass.get_secret_value() if isinstance(admin_pass, SecretStr) else admin_pass
    return secrets.encrypt(plain, key_file=key)


def open_admin_pass(instance: Instance, key: Path) -> str:
    """The instance's admin password in clear, for its node to set in its VM now; a SecretError (naming the
    key file, never the secret) if it cannot be decrypted, a ValueError if the instance has none."""
    if not instance.admin_pass_encrypted:
        raise ValueError(f"instance {instance.id} has no admin password")
    return secrets.decrypt(instance.admin_pass_encrypted, key_file=key)


def _admin_pass(instance: Instance, key: Path) -> str | None:
    if not instance.admin_pass_encrypted:
        return None
    try:
        return secrets.decrypt(instance.admin_pass_encrypted, key_file=key)
    except secrets.SecretError as exc:  # the message names the key file, never the secret
        log.error("metadata for instance %s leaves out its admin password: %s", instance.id, exc.message)
        return None


# -- hostnames -----------------------------------------------------------------------
def hostname_for(name: str, instance_id: str) -> str:
    """A DNS label from an instance name: lowercase, [a-z0-9-] only, no '-' at the ends, <= 63 characters."""
    label = _NOT_IN_HOSTNAME.sub("-", name.lower()).strip("-")[:HOSTNAME_MAX].rstrip("-")
    return label or f"instance-{instance_id[:8]}"


# -- who is asking --------------------------------------------------------------------
def parse_source(network_id: str | None, forwarded_for: str | None) -> tuple[str, str]:
    """The (network id, IPv4 address) a proxy's headers name; a missing or bad one is a 400 naming it."""
    try:
        network = str(uuid.UUID((network_id or "").strip()))
    except ValueError:
        raise InvalidInput(f"{NETWORK_HEADER}: give the id of the network the request came in on",
                           field=NETWORK_HEADER) from None
    # Exactly one address, the one the proxy saw: a list could carry one the instance made up.
    try:
        address = str(ipaddress.IPv4Address((forwarded_for or "").strip()))
    except ValueError:
        raise InvalidInput(f"{SOURCE_HEADER}: give the one IPv4 source address of the instance's request",
                           field=SOURCE_HEADER) from None
    return network, address


def agent_host(session: Session, caller: Caller) -> str:
    """The hostname of the node the caller's agent token was issued for."""
    node = session.get(Node, caller.node_id) if caller.node_id else None
    if node is None:
        raise Forbidden("this agent token is issued for no node: agents that proxy metadata need their node's token")
    return node.hostname


def instance_at(session: Session, caller: Caller, network_id: str, address: str) -> Instance:
    """The live instance whose port on `network_id` has `address` and is bound to the caller's node
    (or, while a build has not yet recorded the binding, belongs to an instance on the caller's node:
    a host may boot and ask before the build's last steps)."""
    host = agent_host(session, caller)
    on_this_node = or_(Port.binding_host_id == host, and_(Port.binding_host_id == "", Node.hostname == host))
    query = (select(Instance).join(Port, Port.instance_id == Instance.id)
             .outerjoin(Node, Node.id == Instance.node_id)
             .where(Port.network_id == network_id, Port.ip_address == address, on_this_node,
                    Instance.deleted.is_(False)))
    instance = session.scalars(query).first()
    if instance is None:
        log.info("metadata asked by node %s for %s on network %s: no such instance there", host, address,
                 network_id)
        raise NotFound(f"no instance at {address} on network {network_id}")
    return instance


# -- the documents --------------------------------------------------------------------
def meta_data(instance: Instance, key: Path) -> dict[str, Any]:
    """`openstack/latest/meta_data.json` (Nova's fields that cloud-init reads)."""
    data: dict[str, Any] = {"uuid": instance.id, "name": instance.name,
                            "hostname": hostname_for(instance.name, instance.id),
                            "project_id": instance.project_id, "launch_index": 0, "availability_zone": "nova",
                            "meta": {}}
    if instance.key_name and instance.key_data:
        data["public_keys"] = {instance.key_name: instance.key_data}
        data["keys"] = [{"name": instance.key_name, "type": "ssh", "data": instance.key_data}]
    admin_pass = _admin_pass(instance, key)
    if admin_pass is not None:
        data["admin_pass"] = admin_pass
    return data


def document(instance: Instance, path: str, key: Path) -> Document:
    """The answer to `GET /v1/metadata/<path>` for `instance`; anything else is a 404."""
    parts = path.strip("/").split("/")
    if parts == ["openstack"]:
        return Document(VERSION.encode(), TEXT)
    if parts == ["openstack", VERSION]:
        names = [META_DATA, USER_DATA] if instance.user_data else [META_DATA]
        return Document("\n".join(names).encode(), TEXT)
    if parts == ["openstack", VERSION, META_DATA]:
        return Document(json.dumps(meta_data(instance, key)).encode(), JSON)
    if parts == ["openstack", VERSION, USER_DATA]:
        if not instance.user_data:
            raise NotFound(f"instance {instance.id} has no user data")
        return Document(instance.user_data.encode(), OCTETS)
    raise NotFound(f"no metadata at '{path[:200]}'")
