"""Named network namespaces: create, delete, look inside, run a command inside.

Every namespace here is a named one (``ip netns`` style, a bind mount under
``/run/netns``): a lab DPU or bare-metal host, a metadata proxy's namespace.
So ``ip netns exec`` and ``ip -n`` see the same namespaces as this module. Everything here needs root (CAP_SYS_ADMIN).
Netlink work goes through pyroute2; a socket is opened per call, so a
namespace deleted and re-created under the same name is never talked to
through a stale socket.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2 import netns as _pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError

from dpustack.errors import DpustackError

RUN_DIR = "/run/netns"
_IFF_UP = 0x1
_CLONE_NEWNET = 0x40000000
_SO_NETNS_COOKIE = 71  # Linux 5.14+; not in Python's socket module


class NetnsError(DpustackError):
    """A namespace is missing, or a netlink call or command inside one failed."""

    code = "netns_error"


@dataclass(frozen=True)
class Link:
    """One network interface as seen inside a namespace."""

    name: str
    index: int
    mac: str | None
    up: bool  # administratively up (IFF_UP), whatever the carrier
    kind: str | None  # rtnetlink kind: "veth", "bridge"… None for lo and physical NICs
    alias: str | None
    peer_index: int | None  # IFLA_LINK: for a veth, the peer's index in the peer's namespace


def exists(name: str) -> bool:
    """Whether the named namespace exists."""
    return os.path.exists(os.path.join(RUN_DIR, name))


def identity(name: str) -> str:
    """A token that changes when the namespace is deleted and re-created under the same name: the kernel's
    namespace cookie, a counter never reused (a namespace's inode number is, so it cannot serve)."""
    probe = socket_in(name, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        cookie = probe.getsockopt(socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8)
    except OSError as exc:
        raise NetnsError(f"cannot read the cookie of network namespace '{name}': {exc.strerror or exc}") from exc
    finally:
        probe.close()
    return f"cookie:{struct.unpack('=Q', cookie)[0]}"


def socket_in(name: str, family: int, kind: int) -> socket.socket:
    """A new socket inside the named namespace (it stays there, whatever thread uses it later).

    ``setns`` moves only the calling thread, so a throwaway thread enters the namespace, makes the socket
    and ends.
    """
    made: dict[str, socket.socket | OSError] = {}

    def enter_and_make() -> None:
        try:
            with open(os.path.join(RUN_DIR, name)) as handle:
                if ctypes.CDLL(None, use_errno=True).setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, os.strerror(error))
            made["socket"] = socket.socket(family, kind)
        except OSError as exc:
            made["error"] = exc

    thread = threading.Thread(target=enter_and_make, name=f"socket-in-{name}")
    thread.start()
    thread.join()
    if "error" in made:
        error = made["error"]
        if isinstance(error, FileNotFoundError):
            raise NetnsError(f"network namespace '{name}' does not exist") from None
        raise NetnsError(f"cannot open a socket in network namespace '{name}': {error}") from error
    made_socket = made["socket"]
    assert isinstance(made_socket, socket.socket)
    return made_socket


def create(name: str) -> None:
    """Create the namespace unless it exists, and bring its loopback up."""
    if not exists(name):
        try:
            _pyroute2_netns.create(name)
        except FileExistsError:
            pass  # created meanwhile by someone else: fine
        except OSError as exc:
            raise NetnsError(f"cannot create network namespace '{name}': {exc.strerror or exc}") from exc
    with rtnl(name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def delete(name: str) -> None:
    """Delete the namespace if it exists; its interfaces and their veth peers go with it, at once.

    The kernel may keep a deleted namespace alive a while (an orphaned TCP socket retrying its FIN holds it),
    so its veths are deleted first: their peers in other namespaces must not outlive the call."""
    if not exists(name):
        return
    _delete_veths(name)
    try:
        _pyroute2_netns.remove(name)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise NetnsError(f"cannot delete network namespace '{name}': {exc.strerror or exc}") from exc


def names() -> list[str]:
    """Every named namespace, sorted."""
    return sorted(_pyroute2_netns.listnetns(RUN_DIR))


@contextmanager
def rtnl(name: str) -> Iterator[IPRoute]:
    """A pyroute2 IPRoute inside the namespace, which must exist (it is never created here).

    Netlink errors raised inside the block are turned into NetnsError naming the namespace.
    """
    if not exists(name):
        raise NetnsError(f"network namespace '{name}' does not exist")
    try:
        ipr = IPRoute(netns=name, flags=0)
    except OSError as exc:
        raise NetnsError(f"cannot open netlink in namespace '{name}': {exc.strerror or exc}") from exc
    try:
        yield ipr
    except NetlinkError as exc:
        raise NetnsError(f"netlink in namespace '{name}': {exc.args[1] if len(exc.args) > 1 else exc}") from exc
    finally:
        ipr.close()


def links(name: str) -> list[Link]:
    """The interfaces inside the namespace, in index order."""
    with rtnl(name) as ipr:
        found = [_link(msg) for msg in ipr.get_links()]
    return sorted(found, key=lambda link: link.index)


def find_link(name: str, ifname: str) -> Link | None:
    """The interface called ``ifname`` inside the namespace, or None."""
    return next((link for link in links(name) if link.name == ifname), None)


def run(name: str, argv: Sequence[str], *, check: bool = True,
        timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside the namespace (``ip netns exec``) and return its completed process.

    With ``check``, a non-zero exit raises NetnsError quoting the command and its stderr.
    """
    command = ["ip", "netns", "exec", name, *argv]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"`{shlex.join(argv)}` in namespace '{name}' did not finish within {timeout:g}s") from exc
    except OSError as exc:  # `ip` itself is missing
        raise NetnsError(f"cannot run `{shlex.join(command)}`: {exc.strerror or exc}") from exc
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or "no output"
        raise NetnsError(f"`{shlex.join(argv)}` in namespace '{name}' failed (exit {done.returncode}): {detail}")
    return done


def _delete_veths(name: str) -> None:
    with rtnl(name) as ipr:
        for msg in ipr.get_links():
            if msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "veth":
                try:
                    ipr.link("del", index=msg["index"])
                except NetlinkError:
                    pass  # gone meanwhile: its peer, in this namespace too, was deleted before it


def _link(msg) -> Link:
    return Link(name=msg.get("IFLA_IFNAME"), index=msg["index"], mac=msg.get("IFLA_ADDRESS"),
                up=bool(msg["flags"] & _IFF_UP), kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                alias=msg.get("IFLA_IFALIAS"), peer_index=msg.get("IFLA_LINK"))
