"""A tap wired to a netdev with tc: how the lab hands a net function's host end to a QEMU guest.

    remade = ensure_wire("lab-bm-1", "tap3", "ens3f0")   # True when tap3 had to be made (again)
    is_wired("lab-bm-1", "tap3", "ens3f0")                # the tap there and both redirects in place
    remove_wire("lab-bm-1", "tap3")                       # the tap and its filters gone

The tap is persistent (QEMU opens it by name, libvirt's ``managed='no'``)
and up. The ingress qdisc of each end has one u32 filter matching every
frame (this kernel has no ``matchall``) whose mirred action redirects it to
the other end's egress, so the pair is a pure wire: every frame the guest
sends leaves through the peer, every frame reaching the peer goes to the
guest. Neither end gets an address, and the tap generates no IPv6 one
(``addr_gen_mode`` none, :func:`no_ipv6`), so the namespace never speaks on
the wire itself.

libvirt (9.0) clears the tc of a NIC's tap when it hot-unplugs the NIC
(not when the machine starts, stops or resets): whoever plugs a NIC again
on the same tap wires it again first.
"""

from __future__ import annotations

from pyroute2 import IPRoute

from dpustack.linux import netns

INGRESS = 0xFFFF0000  # the ingress qdisc's handle, "ffff:"
_ETH_P_ALL = 0x0003
_EGRESS_REDIRECT = 1  # TCA_EGRESS_REDIR
_ADDR_GEN_MODE_NONE = 1  # IN6_ADDR_GEN_MODE_NONE


def ensure_wire(namespace: str, tap: str, peer: str) -> bool:
    """Make whatever of the wire between ``tap`` and ``peer`` (which must exist) is missing or wrong;
    True when the tap itself was made, i.e. whoever had the old one open lost it. An interface called
    ``tap`` that is not a tap is an error."""
    found = netns.find_link(namespace, tap)
    if found is not None and found.kind != "tun":
        raise netns.NetnsError(f"interface '{tap}' in namespace '{namespace}' is a {found.kind or 'device'}, "
                               "not a tap")
    made = found is None
    with netns.rtnl(namespace) as ipr:
        if made:
            ipr.link("add", ifname=tap, kind="tuntap", mode="tap")
            no_ipv6(ipr, ipr.link_lookup(ifname=tap)[0])
        tap_index, peer_index = ipr.link_lookup(ifname=tap)[0], _index(ipr, namespace, peer)
        ipr.link("set", index=tap_index, state="up")
        for source, target in ((tap_index, peer_index), (peer_index, tap_index)):
            if _redirects(ipr, source) != {target}:
                _redirect(ipr, source, target)
    return made


def is_wired(namespace: str, tap: str, peer: str) -> bool:
    """Whether ``tap`` is a tap wired both ways to ``peer``."""
    links = {link.name: link for link in netns.links(namespace)}
    tap_link, peer_link = links.get(tap), links.get(peer)
    if tap_link is None or peer_link is None or tap_link.kind != "tun":
        return False
    with netns.rtnl(namespace) as ipr:
        return (_redirects(ipr, tap_link.index) == {peer_link.index}
                and _redirects(ipr, peer_link.index) == {tap_link.index})


def remove_wire(namespace: str, tap: str) -> None:
    """Delete the tap (its filters go with it); nothing to do if it is gone. The peer's filters are
    the peer's: they go with it."""
    with netns.rtnl(namespace) as ipr:
        for index in ipr.link_lookup(ifname=tap):
            ipr.link("del", index=index)


def no_ipv6(ipr: IPRoute, index: int) -> None:
    """No IPv6 address generated on the interface (set it before it goes up: a link-local address made
    already stays)."""
    ipr.link("set", index=index,
             IFLA_AF_SPEC={"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", _ADDR_GEN_MODE_NONE)]})]})


def _index(ipr: IPRoute, namespace: str, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise netns.NetnsError(f"interface '{name}' does not exist in namespace '{namespace}'")
    return found[0]


def _redirects(ipr: IPRoute, index: int) -> set[int]:
    """The interfaces the ingress filters of ``index`` redirect frames to (egress)."""
    if not _has_ingress(ipr, index):
        return set()
    targets = set()
    for message in ipr.get_filters(index=index, parent=INGRESS):
        parameters = message.get_nested("TCA_OPTIONS", "TCA_U32_ACT", "TCA_ACT_PRIO_1", "TCA_ACT_OPTIONS",
                                        "TCA_MIRRED_PARMS")
        if parameters is not None and parameters["eaction"] == _EGRESS_REDIRECT:
            targets.add(parameters["ifindex"])
    return targets


def _redirect(ipr: IPRoute, source: int, target: int) -> None:
    """A fresh ingress qdisc on ``source`` whose one filter redirects every frame to ``target``'s egress."""
    if _has_ingress(ipr, source):
        ipr.tc("del", "ingress", source, "ffff:")
    ipr.tc("add", "ingress", source, "ffff:")
    ipr.tc("add-filter", "u32", source, parent="ffff:", protocol=_ETH_P_ALL, prio=1, target=0x10001,
           keys=["0x0/0x0+0"],
           action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": target})


def _has_ingress(ipr: IPRoute, index: int) -> bool:
    return any(qdisc["index"] == index and qdisc.get("TCA_KIND") == "ingress"
               for qdisc in ipr.get_qdiscs(index=index))
