"""The memory OVS: add_port/del_port are idempotent and port names are switch-wide."""

import pytest

from dpustack.drivers.switch.memory import MemorySwitchDriver
from dpustack.errors import DriverError


def test_a_port_is_plugged_with_its_external_ids():
    switch = MemorySwitchDriver()

    switch.add_port("br-int", "pf1hpf", {"iface-id": "p1", "attached-mac": "aa:bb:cc:dd:ee:01"})

    [port] = switch.list_ports("br-int")
    assert (port.bridge, port.name) == ("br-int", "pf1hpf")
    assert port.external_ids == {"iface-id": "p1", "attached-mac": "aa:bb:cc:dd:ee:01"}


def test_adding_an_existing_port_updates_its_external_ids_unless_may_exist_is_false():
    switch = MemorySwitchDriver()
    switch.add_port("br-int", "pf1hpf", {"iface-id": "p1"})

    switch.add_port("br-int", "pf1hpf", {"attached-mac": "aa:bb:cc:dd:ee:01"})

    [port] = switch.list_ports()
    assert port.external_ids == {"iface-id": "p1", "attached-mac": "aa:bb:cc:dd:ee:01"}
    with pytest.raises(DriverError, match="already exists"):
        switch.add_port("br-int", "pf1hpf", {}, may_exist=False)


def test_a_port_name_cannot_be_on_two_bridges():
    switch = MemorySwitchDriver()
    switch.add_port("br-int", "pf1hpf", {})

    with pytest.raises(DriverError, match="is on bridge 'br-int'"):
        switch.add_port("br-ex", "pf1hpf", {})


def test_deleting_a_missing_port_is_fine_unless_if_exists_is_false():
    switch = MemorySwitchDriver()
    switch.add_port("br-int", "pf1hpf", {})

    switch.del_port("br-int", "pf1hpf")
    switch.del_port("br-int", "pf1hpf")

    assert switch.list_ports() == []
    with pytest.raises(DriverError, match="no port"):
        switch.del_port("br-int", "pf1hpf", if_exists=False)


def test_list_ports_filters_by_bridge():
    switch = MemorySwitchDriver()
    switch.add_port("br-int", "a", {})
    switch.add_port("br-ex", "b", {})

    assert [p.name for p in switch.list_ports("br-ex")] == ["b"]
    assert [p.name for p in switch.list_ports()] == ["b", "a"]


def test_a_packet_rate_limit_is_recorded_per_port_and_lost_with_the_port():
    switch = MemorySwitchDriver()
    switch.add_port("br-int", "pf0vf1", {"iface-id": "p1"})
    assert switch.packet_rate("br-int", "pf0vf1") is None

    switch.set_packet_rate("br-int", "pf0vf1", 1000)
    assert switch.packet_rate("br-int", "pf0vf1") == 1000
    switch.wipe_packet_rates()  # what ovn-controller does to the ovs driver's meters
    assert switch.packet_rate("br-int", "pf0vf1") is None
    switch.set_packet_rate("br-int", "pf0vf1", 2000)
    switch.del_port("br-int", "pf0vf1")
    switch.add_port("br-int", "pf0vf1", {"iface-id": "p1"})
    assert switch.packet_rate("br-int", "pf0vf1") is None  # a re-plug loses it
    switch.set_packet_rate("br-int", "pf0vf1", 2000)
    switch.set_packet_rate("br-int", "pf0vf1", None)
    assert switch.packet_rate("br-int", "pf0vf1") is None


def test_a_packet_rate_needs_a_plugged_port_and_a_positive_rate():
    switch = MemorySwitchDriver()
    switch.add_port("br-int", "pf0vf1", {})
    with pytest.raises(DriverError, match="no port 'pf0vf2' on bridge 'br-int'"):
        switch.set_packet_rate("br-int", "pf0vf2", 1000)
    with pytest.raises(DriverError, match="no port 'pf0vf1' on bridge 'br-ex'"):
        switch.set_packet_rate("br-ex", "pf0vf1", 1000)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(DriverError, match="pps must be a positive whole number"):
            switch.set_packet_rate("br-int", "pf0vf1", bad)
