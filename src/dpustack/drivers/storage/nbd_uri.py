"""NBD URIs of volume exports: parsed into the QMP arguments of an NBD client node, and read back.

Two forms, the ones QEMU's NBD client takes:

* ``nbd://HOST[:PORT]/EXPORT`` (``nbd+tcp://`` too), HOST a name, an IPv4
  address or ``[IPv6]``, PORT 10809 (the NBD port) by default;
* ``nbd+unix:///EXPORT?socket=/absolute/path``.

QEMU reports an NBD node's address as a filename of the same shape
(``nbd://HOST:PORT/EXPORT``, IPv6 without brackets, or
``nbd+unix:///EXPORT?socket=PATH``), with the export name and path written
as they are, unescaped. So the export name and the socket path are limited to
characters that need no escaping in a URI (letters, digits and ``._~:@+=,-``,
``/`` inside a name), and every URI has one canonical spelling
(:attr:`NbdAddress.uri`) that the round trip daemon → URI gives back exactly.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

#: the IANA port of NBD
NBD_PORT = 10809

#: bytes in a unix socket address (sun_path) before its terminating NUL
UNIX_PATH_MAX = 107

_EXPORT = re.compile(r"[A-Za-z0-9._~:@+=,-][A-Za-z0-9._~:@+=,/-]{0,254}")
_SOCKET_PATH = re.compile(r"/[A-Za-z0-9._~:@+=,/-]*")
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


@dataclass(frozen=True)
class NbdAddress:
    """Where an NBD export is: ``host`` and ``port``, or a unix ``socket``; and the export's name."""

    export: str
    host: str | None = None
    port: int | None = None
    socket: str | None = None

    @property
    def uri(self) -> str:
        """The canonical URI: port always written, IPv6 in brackets."""
        if self.socket is not None:
            return f"nbd+unix:///{self.export}?socket={self.socket}"
        host = f"[{self.host}]" if ":" in (self.host or "") else self.host
        return f"nbd://{host}:{self.port}/{self.export}"

    def qmp_server(self) -> dict[str, Any]:
        """The ``server`` argument (a QMP SocketAddress) of a ``blockdev-add`` of driver ``nbd``."""
        if self.socket is not None:
            return {"type": "unix", "path": self.socket}
        return {"type": "inet", "host": self.host, "port": str(self.port)}


def parse_nbd_uri(uri: str) -> NbdAddress:
    """The address in ``uri``; ValueError saying what is wrong with it."""
    if not isinstance(uri, str):
        raise ValueError(f"an NBD URI is a string, not {uri!r}")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ValueError(f"'{uri}' is not an NBD URI (nbd://HOST:PORT/EXPORT or nbd+unix:///EXPORT?socket=PATH)")
    if scheme in ("nbd", "nbd+tcp"):
        authority, slash, export = rest.partition("/")
        if "?" in rest or "#" in rest:
            raise ValueError(f"'{uri}': an nbd:// URI takes no query or fragment")
        host, port = _host_and_port(uri, authority)
        return NbdAddress(export=_export(uri, export if slash else ""), host=host, port=port)
    if scheme == "nbd+unix":
        path, _, query = rest.partition("?")
        if not path.startswith("/"):
            raise ValueError(f"'{uri}': an nbd+unix URI has no host (nbd+unix:///EXPORT?socket=PATH)")
        if not query.startswith("socket=") or "&" in query or "#" in query:
            raise ValueError(f"'{uri}': an nbd+unix URI needs exactly one query parameter, socket=PATH")
        return NbdAddress(export=_export(uri, path[1:]), socket=_socket_path(uri, query[len("socket="):]))
    raise ValueError(f"'{uri}': unknown scheme '{scheme}' (nbd, nbd+tcp or nbd+unix)")


def address_of_node(filename: str) -> NbdAddress | None:
    """The address of an NBD client node from the filename QEMU reports for it
    (``query-named-block-nodes``' ``file``); None if it is not of the two shapes QEMU writes."""
    try:
        if filename.startswith("nbd://"):
            authority, _, export = filename[len("nbd://"):].partition("/")
            host, _, port = authority.rpartition(":")  # QEMU writes an IPv6 host without brackets
            if ":" in host:
                host = f"[{host}]"
            return parse_nbd_uri(f"nbd://{host}:{port}/{export}")
        return parse_nbd_uri(filename) if filename.startswith("nbd+unix://") else None
    except ValueError:
        return None


def _host_and_port(uri: str, authority: str) -> tuple[str, int]:
    if authority.startswith("["):
        host, bracket, tail = authority[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"'{uri}': bad IPv6 host in brackets")
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f"'{uri}': '{host}' is not an IPv6 address") from None
        port_text = tail[1:] if tail else None
    else:
        host, colon, port_text = authority.partition(":")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"'{uri}': '{host}' is not a host name or address")
        port_text = port_text if colon else None
    if port_text is None:
        return host, NBD_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"'{uri}': port '{port_text}' is not a number from 1 to 65535")
    return host, int(port_text)


def _export(uri: str, name: str) -> str:
    if not _EXPORT.fullmatch(name):
        raise ValueError(f"'{uri}': the export name must be 1-255 letters, digits or ._~:@+=,-/ "
                         f"(not starting with /), not '{name}'")
    return name


def _socket_path(uri: str, path: str) -> str:
    if not _SOCKET_PATH.fullmatch(path) or len(path.encode()) > UNIX_PATH_MAX:
        raise ValueError(f"'{uri}': socket must be an absolute path of at most {UNIX_PATH_MAX} bytes "
                         f"of letters, digits or ._~:@+=,-/, not '{path}'")
    return path
