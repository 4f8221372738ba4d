"""TLS between the controller and its agents: one helper for the verifying client side.

Servers (uvicorn) take their certificate and key files directly; every client that calls the other side
verifies the peer's certificate against a CA bundle (``None``: the system's CAs).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from dpustack.errors import InvalidInput


def client_context(ca_file: Path | str | None, *, field: str = "ca_file") -> ssl.SSLContext:
    """A context that verifies the server's certificate chain and name; a missing CA file is named."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"{field}: cannot load the CA bundle {ca_file}: {exc}", field=field) from exc


def check_pair(cert_file: Path, key_file: Path, *, field: str) -> None:
    """Fail early, naming the field, when a server's certificate and key do not load together."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"{field}: cannot load the certificate {cert_file} with its key {key_file}: {exc}",
                           field=field) from exc
