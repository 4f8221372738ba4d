"""Public keys as OpenSSH writes them: which are accepted, and the fingerprint ssh-keygen shows for them.

The keys in fixtures/ssh_keys were made by ssh-keygen; fingerprints.txt holds what
`ssh-keygen -l -E sha256 -f FILE` printed for each. Where ssh-keygen is installed,
the tests ask it again.
"""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from dpustack.controller.services.keypairs import parse_public_key
from dpustack.errors import InvalidInput

KEYS = Path(__file__).parent / "fixtures" / "ssh_keys"
RECORDED = dict(line.split() for line in (KEYS / "fingerprints.txt").read_text().splitlines()
                if line and not line.startswith("#"))


def _wire(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(part)) + part for part in parts)


def _line(key_type: str, blob: bytes, comment: str = "") -> str:
    return f"{key_type} {base64.b64encode(blob).decode()} {comment}".strip()


ED25519 = (KEYS / "ed25519.pub").read_text()


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_fingerprint_is_the_one_ssh_keygen_prints(name: str) -> None:
    key = parse_public_key((KEYS / name).read_text())
    assert key.fingerprint == RECORDED[name]
    keygen = shutil.which("ssh-keygen")
    if keygen:  # and the ssh-keygen here agrees
        shown = subprocess.run([keygen, "-l", "-E", "sha256", "-f", str(KEYS / name)], check=True,
                               capture_output=True, text=True).stdout.split()[1]
        assert key.fingerprint == shown


def test_every_supported_type_parses_with_its_comment() -> None:
    types = {name: parse_public_key((KEYS / name).read_text()) for name in RECORDED}
    assert {name: key.type for name, key in types.items()} == {
        "ed25519.pub": "ssh-ed25519", "rsa.pub": "ssh-rsa", "ecdsa256.pub": "ecdsa-sha2-nistp256",
        "ecdsa384.pub": "ecdsa-sha2-nistp384", "ecdsa521.pub": "ecdsa-sha2-nistp521"}
    assert types["rsa.pub"].comment == "bob@build host"  # spaces inside a comment are kept
    assert types["ecdsa256.pub"].comment == ""


def test_stored_text_is_the_key_line_without_surrounding_blanks() -> None:
    key = parse_public_key(f"\n  {ED25519.strip()}  \n")
    assert key.text == ED25519.strip()
    no_comment = parse_public_key(" ".join(ED25519.split()[:2]))
    assert no_comment.text == " ".join(ED25519.split()[:2]) and no_comment.comment == ""


def test_fingerprint_matches_an_independently_computed_vector() -> None:
    # Worked out with python3 hashlib and base64 on their own, and checked once with ssh-keygen.
    blob = _wire(b"ssh-ed25519", bytes(range(32)))
    assert parse_public_key(_line("ssh-ed25519", blob)).fingerprint == \
        "SHA256:ZkAslGjFiUHdGf/WUL8rQvkib4PTvQatUV0OUQSncCA"


@pytest.mark.parametrize("text, says", [
    ("", "give an OpenSSH public key"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "is not one of"),
    ("ssh-ed25519", "no key data"),
    ("ssh-ed25519 not*base64!", "not valid base64"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK6SOToONt1", "not valid base64"),  # cut short: padding wrong
    (_line("ssh-rsa", _wire(b"ssh-ed25519", bytes(32))), "not a ssh-rsa key"),
    (_line("ssh-ed25519", _wire(b"ssh-ed25519", bytes(31))), "is 32 bytes"),
    (_line("ssh-ed25519", _wire(b"ssh-ed25519", bytes(32)) + b"\x00\x00"), "ends inside a length"),
    (_line("ssh-ed25519", _wire(b"ssh-ed25519")[:-3]), "longer than the data"),
    (_line("ssh-ed25519", _wire(b"ssh-ed25519", bytes(32), b"extra")), "holds 2 fields"),
    (_line("ecdsa-sha2-nistp256", _wire(b"ecdsa-sha2-nistp256", b"nistp384", b"\x04" + bytes(64))),
     "curve does not match"),
    ("from=\"10.0.0.1\" " + ED25519, "is not one of"),  # authorized_keys options are not a key
    (ED25519.strip() + "\n" + ED25519.strip(), "one key on one line"),
])
def test_a_bad_key_is_a_400_naming_public_key(text: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_public_key(text)
    assert caught.value.field == "public_key"
    assert says in caught.value.message
