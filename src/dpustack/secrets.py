"""Secrets at rest: Fernet tokens (AES-128-CBC + HMAC-SHA256) under a key kept in a 0600 file.

::

    token = encrypt("bmc-password", key_file="/etc/dpustack/secret.key")   # creates the key once
    decrypt(token, key_file="/etc/dpustack/secret.key")                     # -> "bmc-password"

The key file is created on first use with mode 0600 in a 0700 directory and
is refused later if others may read it. Without ``key_file`` the key is
``$DPUSTACK_SECRET_KEY_FILE``, else ``$DPUSTACK_HOME/secret.key`` (DPUSTACK_HOME
defaulting to ``~/.local/share/dpustack``). Error messages name the key file,
never the secret.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from dpustack.errors import DpustackError

KEY_FILE_ENV = "DPUSTACK_SECRET_KEY_FILE"


class SecretError(DpustackError):
    """A secret cannot be encrypted or decrypted (missing, unsafe or wrong key, damaged token)."""

    code = "secret_error"


def digest(secret: str) -> str:
    """What is stored of a secret that is only ever compared (tokens, credentials): its SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def default_key_file() -> Path:
    """``$DPUSTACK_SECRET_KEY_FILE``, else ``$DPUSTACK_HOME/secret.key``."""
    if os.environ.get(KEY_FILE_ENV):
        return Path(os.environ[KEY_FILE_ENV])
    home = os.environ.get("DPUSTACK_HOME") or str(Path.home() / ".local/share/dpustack")
    return Path(home) / "secret.key"


def encrypt(text: str, *, key_file: str | Path | None = None) -> str:
    """The Fernet token of ``text``; the key file is created (0600) if it does not exist."""
    return _fernet(Path(key_file or default_key_file()), create=True).encrypt(text.encode()).decode("ascii")


def decrypt(token: str, *, key_file: str | Path | None = None) -> str:
    """The text ``token`` was made from; the key file must exist."""
    path = Path(key_file or default_key_file())
    try:
        return _fernet(path, create=False).decrypt(token.strip().encode("ascii")).decode()
    except (InvalidToken, UnicodeError) as exc:
        raise SecretError(f"cannot decrypt the secret: the token is damaged or was not made with the "
                          f"key in {path}") from exc


def ensure_key(path: Path) -> Path:
    """Make the key file (mode 0600) if there is none yet; refuse one that others may read."""
    load_key(path, create=True)
    return path


def load_key(path: Path, *, create: bool) -> bytes:
    """The key in ``path``; with ``create``, a new key is written first if there is none."""
    if create and not path.exists():
        _create_key(path)
    try:
        mode = path.stat().st_mode
        key = path.read_bytes().strip()
    except FileNotFoundError as exc:
        raise SecretError(f"no secret key file at {path}: encrypt the secret with this key file first") from exc
    except OSError as exc:
        raise SecretError(f"cannot read the secret key file {path}: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"the secret key file {path} is open to other users (mode {stat.S_IMODE(mode):04o}); "
                          f"run: chmod 600 {path}")
    return key


def _fernet(path: Path, *, create: bool) -> Fernet:
    key = load_key(path, create=create)
    try:
        return Fernet(key)
    except ValueError as exc:
        raise SecretError(f"the secret key file {path} does not hold a Fernet key") from exc


def _create_key(path: Path) -> None:
    """Write a new key beside ``path``, then link it into place: a concurrent first user either
    wins the link or reads the winner's complete key, never a half-written or second key."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key() + b"\n")
        os.link(partial, path)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SecretError(f"cannot create the secret key file {path}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
