"""The credentials between the controller and one node's agent, in both directions.

* agent -> controller: an agent token issued for the node (only its SHA-256 is stored here);
* controller -> agent: a random credential the controller presents to that node's agent alone. The agent
  keeps only its SHA-256; the controller keeps it encrypted under its own key (it must present it).

Rotation never leaves a gap (docs/security.md): the new pair is stored first as pending, the agent is told
and keeps accepting the old credential until the new one is used, then the controller switches and revokes
the old agent tokens. A crash at any point leaves a pair both sides still accept.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from dpustack import secrets as sealed
from dpustack.db.models import Node
from dpustack.errors import Conflict


def new_credential() -> str:
    return secrets.token_urlsafe(32)


def seal(credential: str, key_file: Path) -> str:
    return sealed.encrypt(credential, key_file=key_file)


def current(node: Node, key_file: Path) -> str:
    """The credential the controller presents to the node's agent now."""
    if not node.credential_encrypted:
        raise Conflict(f"node {node.hostname} has no controller credential (it joined before per-node "
                       "credentials): enroll it again", field="node")
    return sealed.decrypt(node.credential_encrypted, key_file=key_file)


def pending(node: Node, key_file: Path) -> str | None:
    """The credential being rotated in, until the agent confirmed it."""
    if not node.pending_credential_encrypted:
        return None
    return sealed.decrypt(node.pending_credential_encrypted, key_file=key_file)
