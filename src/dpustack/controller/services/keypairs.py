"""Key pairs: a project's SSH public keys, named so instances can be given one at create time.

Only the public half is ever known to dpustack. A key is checked as OpenSSH
writes it (`TYPE BASE64 [COMMENT]`, as in ``~/.ssh/id_ed25519.pub``) and keeps
the fingerprint ``ssh-keygen -l -E sha256`` prints for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dpustack.controller.services.common import Caller, ensure_unique_name, find, scoped
from dpustack.db.models import KeyPair
from dpustack.errors import InvalidInput

FIELD = "public_key"

# What follows the type name in each type's blob (RFC 4253 6.6, RFC 5656 3.1, RFC 8709 4).
BLOB_FIELDS: dict[str, tuple[str, ...]] = {
    "ssh-rsa": ("e", "n"),
    "ssh-ed25519": ("key",),
    "ecdsa-sha2-nistp256": ("curve", "point"),
    "ecdsa-sha2-nistp384": ("curve", "point"),
    "ecdsa-sha2-nistp521": ("curve", "point"),
}
ED25519_KEY_BYTES = 32


@dataclass(frozen=True)
class PublicKey:
    """An OpenSSH public key, checked: its type, its decoded blob and its comment."""

    type: str
    blob: bytes
    comment: str = ""

    @property
    def text(self) -> str:
        """The key as one authorized_keys line: `TYPE BASE64 [COMMENT]`."""
        parts = [self.type, base64.b64encode(self.blob).decode("ascii")]
        return " ".join(parts + [self.comment] if self.comment else parts)

    @property
    def fingerprint(self) -> str:
        """`SHA256:` and the unpadded base64 of the blob's SHA-256, as ssh-keygen prints it."""
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode("ascii").rstrip("=")
        return f"SHA256:{digest}"


def parse_public_key(text: str) -> PublicKey:
    """Check an OpenSSH public key line; a bad one is a 400 naming `public_key`."""
    line = text.strip()
    if not line:
        raise InvalidInput("public_key: give an OpenSSH public key, e.g. the content of ~/.ssh/id_ed25519.pub",
                           field=FIELD)
    if "\n" in line or "\r" in line:
        raise InvalidInput("public_key: give one key on one line", field=FIELD)
    key_type, data, comment = (line.split(None, 2) + ["", ""])[:3]
    if key_type not in BLOB_FIELDS:
        raise InvalidInput(f"public_key: type '{key_type[:40]}' is not one of {', '.join(BLOB_FIELDS)}",
                           field=FIELD)
    if not data:
        raise InvalidInput(f"public_key: the {key_type} key has no key data after its type", field=FIELD)
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("public_key: the key data is not valid base64", field=FIELD) from None
    _check_blob(key_type, blob)
    return PublicKey(type=key_type, blob=blob, comment=comment.strip())


def _check_blob(key_type: str, blob: bytes) -> None:
    try:
        strings = _length_prefixed(blob)
    except ValueError as exc:
        raise InvalidInput(f"public_key: the key data is damaged: {exc}", field=FIELD) from None
    if not strings or strings[0] != key_type.encode():
        raise InvalidInput(f"public_key: the key data is not a {key_type} key", field=FIELD)
    expected = BLOB_FIELDS[key_type]
    if len(strings) != 1 + len(expected):
        raise InvalidInput(f"public_key: a {key_type} key holds {len(expected) + 1} fields, this one "
                           f"{len(strings)}", field=FIELD)
    fields = dict(zip(expected, strings[1:]))
    if key_type == "ssh-ed25519" and len(fields["key"]) != ED25519_KEY_BYTES:
        raise InvalidInput(f"public_key: an ssh-ed25519 key is {ED25519_KEY_BYTES} bytes, this one "
                           f"{len(fields['key'])}", field=FIELD)
    if key_type.startswith("ecdsa-") and fields["curve"] != key_type.rpartition("-")[2].encode():
        raise InvalidInput(f"public_key: the key's curve does not match its type {key_type}", field=FIELD)


def _length_prefixed(blob: bytes) -> list[bytes]:
    """The SSH wire strings (uint32 length, then that many bytes) that make up `blob`, exactly."""
    strings, offset = [], 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            raise ValueError("it ends inside a length")
        (length,) = struct.unpack_from(">I", blob, offset)
        offset += 4
        if offset + length > len(blob):
            raise ValueError("a field is longer than the data")
        strings.append(blob[offset:offset + length])
        offset += length
    return strings


# -- key pairs ------------------------------------------------------------------------
def create_keypair(session: Session, caller: Caller, *, name: str, public_key: str) -> KeyPair:
    key = parse_public_key(public_key)
    ensure_unique_name(session, KeyPair, name, caller.project_id, kind="key pair")
    keypair = KeyPair(name=name, project_id=caller.project_id, public_key=key.text, fingerprint=key.fingerprint)
    session.add(keypair)
    session.flush()
    return keypair


def list_keypairs(session: Session, caller: Caller) -> list[KeyPair]:
    query = scoped(select(KeyPair), KeyPair, caller).order_by(KeyPair.created_at)
    return list(session.scalars(query))


def get_keypair(session: Session, caller: Caller, ref: str, *, field: str = "keypair") -> KeyPair:
    return find(session, KeyPair, ref, caller, kind="key pair", field=field)


def delete_keypair(session: Session, caller: Caller, ref: str) -> None:
    """Instances made with the key keep their copy of it (Instance.key_data)."""
    session.delete(get_keypair(session, caller, ref))


def keypair_of_project(session: Session, project_id: str, ref: str, *, field: str = "key_name") -> KeyPair:
    """A key pair of `project_id` by name or id, for an instance of that project (404 naming `field`)."""
    return find(session, KeyPair, ref, None, kind="key pair", field=field, extra=KeyPair.project_id == project_id)
