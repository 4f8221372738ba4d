"""What every HypervisorDriver checks of a domain's definition and of a device to attach, whatever holds them.

A definition is identified by the digest of its XML (canonical XML, so whitespace and attribute order do
not count), which :func:`definition` writes into the domain's ``<metadata>`` as
``<dpustack:definition sha256='…'/>`` (namespace :data:`NAMESPACE`): defining the same XML again finds the
same digest, a domain whose digest differs (or that has none, defined by someone else) is another domain,
and :func:`defined_digest` tells the domains a driver defined from the host's others.

A device is an XML element with the user alias ``ua-<id>`` (:func:`device`); two elements are the same
device (:func:`same_device`) when they are of one kind at one guest address with the same MAC and source.
"""

from __future__ import annotations

import hashlib
import uuid as uuid_module
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

from dpustack.errors import InvalidInput
from dpustack.libvirt_host import ALIAS_PREFIX, user_alias

NAMESPACE = "https://dpustack.dev/xmlns/libvirt-domain/1"
_MARK = f"{{{NAMESPACE}}}definition"
_DIGEST = "sha256"
_PCI = ("domain", "bus", "slot", "function")
ET.register_namespace("dpustack", NAMESPACE)


@dataclass(frozen=True)
class Definition:
    """A domain's XML as a driver defines it: with its UUID, and marked with the digest of the XML given."""

    uuid: str  # lower case, with hyphens
    name: str
    digest: str
    xml: str


def domain_uuid(text: str) -> str:
    """``text`` as libvirt spells a UUID (lower case, hyphens); InvalidInput naming ``uuid`` if it is none."""
    try:
        return str(uuid_module.UUID(str(text)))
    except ValueError:
        raise InvalidInput(f"uuid: {text!r} is not a UUID", field="uuid") from None


def definition(uuid: str, xml: str) -> Definition:
    """The definition of domain ``uuid`` from ``xml``: its ``<uuid>`` must be ``uuid`` (one is added if it has
    none) and it must have a ``<name>``; InvalidInput naming ``xml`` or ``uuid`` otherwise."""
    wanted = domain_uuid(uuid)
    root = _parse(xml, "xml")
    if root.tag != "domain":
        raise InvalidInput(f"xml: a <domain>, not <{root.tag}>", field="xml")
    name = (root.findtext("name") or "").strip()
    if not name:
        raise InvalidInput("xml: the domain has no <name>", field="xml")
    given = root.find("uuid")
    if given is None:
        given = ET.Element("uuid")
        given.text = wanted
        root.insert(list(root).index(root.find("name")) + 1, given)
    elif _uuid_or_none(given.text) != wanted:
        raise InvalidInput(f"uuid: the XML is of domain {given.text!r}, not {wanted}", field="uuid")
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(root, "metadata")
    for mark in metadata.findall(_MARK):  # an XML read back from a domain: its old mark does not count
        metadata.remove(mark)
    if not len(metadata):
        root.remove(metadata)
    digest = hashlib.sha256(ET.canonicalize(ET.tostring(root, encoding="unicode"), strip_text=True).encode()).hexdigest()
    if root.find("metadata") is None:
        metadata = ET.SubElement(root, "metadata")
    ET.SubElement(metadata, _MARK, {_DIGEST: digest})
    return Definition(uuid=wanted, name=name, digest=digest, xml=ET.tostring(root, encoding="unicode"))


def defined_digest(xml: str) -> str | None:
    """The digest :func:`definition` marked a domain's XML with; None if it carries none."""
    mark = _parse(xml, "domain XML").find(f"metadata/{_MARK}")
    return mark.get(_DIGEST) if mark is not None else None


def device(xml: str, alias: str) -> ET.Element:
    """The device element of ``xml`` with the user alias of ``alias`` (added if it has no alias);
    InvalidInput naming ``device_xml`` if it is not one element or is aliased otherwise."""
    user = user_alias(alias)
    element = _parse(xml, "device_xml")
    found = element.find("alias")
    if found is None:
        ET.SubElement(element, "alias", name=user)
    elif found.get("name") != user:
        raise InvalidInput(f"device_xml: its alias is {found.get('name')!r}, not {user!r}", field="device_xml")
    return element


def aliases(domain: ET.Element) -> dict[str, ET.Element]:
    """The devices of a domain's XML with a user alias (``ua-<id>``), by id; controllers left out."""
    found = {}
    for element in domain.iterfind("devices/*"):
        alias = element.find("alias")
        name = alias.get("name", "") if alias is not None else ""
        if element.tag != "controller" and name.startswith(ALIAS_PREFIX):
            found[name[len(ALIAS_PREFIX):]] = element
    return found


def guest_address(element: ET.Element) -> tuple[int, int, int, int] | None:
    """A device's guest PCI address (domain, bus, slot, function), None if it has none."""
    address = element.find("address")
    if address is None or address.get("type") != "pci":
        return None
    try:
        domain, bus, slot, function = (int(address.get(part, "0"), 0) for part in _PCI)
        return domain, bus, slot, function
    except ValueError:
        return None


def addresses(devices: Mapping[str, ET.Element]) -> dict[str, tuple[int, int, int, int]]:
    """The guest PCI addresses of devices by id (as :func:`aliases` gives them); those with none left out."""
    found = {alias: guest_address(element) for alias, element in devices.items()}
    return {alias: address for alias, address in found.items() if address is not None}


def same_device(ours: ET.Element, theirs: ET.Element) -> bool:
    """Whether ``theirs`` (as the domain holds it) is the device ``ours`` describes: one kind, one guest
    address, and the attributes ``ours`` gives its ``<mac>`` and ``<source>`` (case aside)."""
    if ours.tag != theirs.tag or guest_address(ours) != guest_address(theirs):
        return False
    for child in ("mac", "source"):
        given, held = ours.find(child), theirs.find(child)
        if given is None:
            continue
        if held is None or any(held.get(key, "").lower() != value.lower() for key, value in given.attrib.items()):
            return False
    return True


def _uuid_or_none(text: str | None) -> str | None:
    try:
        return str(uuid_module.UUID((text or "").strip()))
    except ValueError:
        return None


def _parse(xml: str, field: str) -> ET.Element:
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InvalidInput(f"{field}: not XML: {exc}", field=field) from None
