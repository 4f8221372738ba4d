"""What both hypervisor drivers check of a definition and of a device: UUID, digest mark, aliases, sameness."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from dpustack.drivers.hypervisor.definition import (NAMESPACE, aliases, defined_digest, definition, device,
                                                    domain_uuid, same_device)
from dpustack.errors import InvalidInput

UUID = "6f1c2d3e-4a5b-4c6d-8e7f-90a1b2c3d4e5"
XML = f"<domain type='qemu'><name>vm-1</name><uuid>{UUID}</uuid><memory unit='MiB'>256</memory></domain>"
NIC = ("<interface type='ethernet'><mac address='52:54:00:00:00:02'/><target dev='tap1' managed='no'/>"
       "<alias name='ua-nic1'/><address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>"
       "</interface>")


def test_uuids_are_spelled_as_libvirt_does():
    assert domain_uuid(UUID.upper().replace("-", "")) == UUID
    with pytest.raises(InvalidInput) as caught:
        domain_uuid("instance-1")
    assert caught.value.field == "uuid"


def test_the_definition_is_marked_with_the_digest_of_the_xml_given():
    made = definition(UUID, XML)

    assert (made.uuid, made.name) == (UUID, "vm-1")
    mark = ET.fromstring(made.xml).find(f"metadata/{{{NAMESPACE}}}definition")
    assert mark is not None and mark.get("sha256") == made.digest == defined_digest(made.xml)
    assert defined_digest(XML) is None


def test_the_digest_ignores_layout_and_an_old_mark_but_not_content():
    spaced = XML.replace("><", ">\n  <").replace("type='qemu'", 'type="qemu"')
    assert definition(UUID, spaced).digest == definition(UUID, XML).digest
    assert definition(UUID, definition(UUID, XML).xml).digest == definition(UUID, XML).digest
    assert definition(UUID, XML.replace("256", "512")).digest != definition(UUID, XML).digest


def test_other_metadata_of_the_xml_is_kept():
    xml = XML.replace("</domain>", "<metadata><app:x xmlns:app='urn:app'>1</app:x></metadata></domain>")

    metadata = ET.fromstring(definition(UUID, xml).xml).find("metadata")

    assert [child.tag for child in metadata] == ["{urn:app}x", f"{{{NAMESPACE}}}definition"]


def test_an_xml_without_a_uuid_gets_the_one_given_and_one_with_another_is_refused():
    without = XML.replace(f"<uuid>{UUID}</uuid>", "")
    assert ET.fromstring(definition(UUID, without).xml).findtext("uuid") == UUID

    with pytest.raises(InvalidInput, match="not 6f1c") as caught:
        definition(UUID, XML.replace(UUID, "0b9a8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d"))
    assert caught.value.field == "uuid"
    for bad in ("<domain><uuid/>", "<network/>", "<domain/>"):
        with pytest.raises(InvalidInput) as caught:
            definition(UUID, bad)
        assert caught.value.field == "xml"


def test_a_device_carries_the_alias_named():
    assert device(NIC, "nic1").find("alias").get("name") == "ua-nic1"
    assert device("<disk type='file'/>", "data").find("alias").get("name") == "ua-data"
    with pytest.raises(InvalidInput) as caught:
        device(NIC, "nic2")
    assert caught.value.field == "device_xml"
    with pytest.raises(InvalidInput):
        device("<disk", "data")


def test_the_aliased_devices_of_a_domain_leave_controllers_and_libvirts_aliases_out():
    domain = ET.fromstring("<domain><devices><controller type='pci'><alias name='ua-rp0'/></controller>"
                           f"{NIC}<serial type='pty'><alias name='serial0'/></serial></devices></domain>")

    assert list(aliases(domain)) == ["nic1"]


def test_a_device_is_the_same_as_libvirts_copy_of_it_and_not_one_elsewhere_or_with_another_mac():
    ours = ET.fromstring(NIC)
    theirs = ET.fromstring(NIC.replace("</interface>", "<model type='virtio'/></interface>")
                           .replace("52:54:00:00:00:02", "52:54:00:00:00:02".upper()))

    assert same_device(ours, theirs)
    assert not same_device(ours, ET.fromstring(NIC.replace("bus='0x03'", "bus='0x04'")))
    assert not same_device(ours, ET.fromstring(NIC.replace(":02'", ":03'")))
    assert not same_device(ours, ET.fromstring(NIC.replace("interface", "disk")))
