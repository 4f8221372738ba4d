"""The ``ovs`` SwitchDriver against a real ovsdb-server and ovs-vswitchd (userspace datapath).

Ports are plugged as ordinary system interfaces whose netdevs do not exist:
that is the representors' own type (``type=""``), ovs-vswitchd takes each one
through its full reconfiguration (and records "could not open network
device"), and nothing appears in any kernel namespace. ``type=internal`` would
make ovs-vswitchd create 500 tap devices, which is not what a DPU does.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from dpustack.drivers.switch import SwitchPort
from dpustack.drivers.switch.ovs import OvsSwitchDriver
from dpustack.drivers.switch.ovs_meters import cookie, meter_id
from dpustack.errors import DriverError
from ovs_sandbox import OvsSandbox, OvsUnavailable

PORT_ID = "5f0c3a5e-9d3b-4c6e-a0f1-2b7e8d9c1a01"
MAC = "fa:16:3e:00:00:01"


@pytest.fixture
def ovs() -> Iterator[OvsSandbox]:
    try:
        sandbox = OvsSandbox().start()
    except OvsUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def driver(ovs: OvsSandbox) -> Iterator[OvsSwitchDriver]:
    switch = OvsSwitchDriver(ovs.db, timeout=10)
    try:
        yield switch
    finally:
        switch.close()


def ports_on(ovs: OvsSandbox, bridge: str) -> list[str]:
    return ovs.vsctl("list-ports", bridge).split()


def representors(count: int, start: int = 0) -> dict[str, dict[str, str]]:
    """``count`` representor names with their iface-id and MAC, as the agent plugs them."""
    return {f"pf0vf{n}": {"iface-id": f"00000000-0000-4000-8000-{n:012x}",
                          "attached-mac": f"fa:16:3e:00:{n >> 8:02x}:{n & 0xff:02x}"}
            for n in range(start, start + count)}


# ------------------------------------------------------------- plug / unplug
def test_a_plugged_representor_carries_its_port_id_and_mac_on_the_interface(ovs, driver):
    port = driver.add_port("br-int", "pf0vf0", {"iface-id": PORT_ID, "attached-mac": MAC, "vm-uuid": "web1"})

    assert port == SwitchPort("br-int", "pf0vf0", {"iface-id": PORT_ID, "attached-mac": MAC, "vm-uuid": "web1"})
    assert ovs.vsctl("get", "Interface", "pf0vf0", "external_ids:iface-id") == f'"{PORT_ID}"'
    assert ovs.vsctl("get", "Interface", "pf0vf0", "external_ids:attached-mac") == f'"{MAC}"'
    assert ovs.vsctl("get", "Interface", "pf0vf0", "external_ids:vm-uuid") == "web1"
    assert ports_on(ovs, "br-int") == ["pf0vf0"]
    assert driver.list_ports() == [port]

    driver.del_port("br-int", "pf0vf0")
    assert ports_on(ovs, "br-int") == []
    assert driver.list_ports("br-int") == []


def test_the_bridge_is_created_on_first_plug_with_the_userspace_datapath(ovs, driver):
    assert ovs.vsctl("list-br") == ""
    driver.add_port("br-int", "pf0vf0", {"iface-id": PORT_ID})
    assert ovs.vsctl("list-br") == "br-int"
    assert ovs.vsctl("get", "Bridge", "br-int", "datapath_type") == "netdev"
    # ovs-vswitchd really built it: the bridge's own port got an OpenFlow port number
    assert ovs.vsctl("get", "Interface", "br-int", "ofport") == "65534"


def test_a_bridge_that_exists_keeps_its_datapath_type(ovs, driver):
    ovs.vsctl("add-br", "br-ex", "--", "set", "Bridge", "br-ex", "datapath_type=system")
    driver.add_port("br-ex", "uplink0", {})
    assert ovs.vsctl("get", "Bridge", "br-ex", "datapath_type") == "system"


# ---------------------------------------------------------------- idempotency
def test_plugging_twice_keeps_one_port_and_merges_its_external_ids(ovs, driver):
    driver.add_port("br-int", "pf0vf0", {"iface-id": PORT_ID, "attached-mac": MAC})
    ovs.vsctl("set", "Interface", "pf0vf0", "external_ids:ovn-installed=true")  # written by ovn-controller

    again = driver.add_port("br-int", "pf0vf0", {"iface-id": PORT_ID, "attached-mac": "fa:16:3e:00:00:02"})

    assert ports_on(ovs, "br-int") == ["pf0vf0"]
    assert again.external_ids == {"iface-id": PORT_ID, "attached-mac": "fa:16:3e:00:00:02", "ovn-installed": "true"}
    assert ovs.vsctl("get", "Interface", "pf0vf0", "external_ids:ovn-installed") == '"true"'
    assert ovs.vsctl("get", "Interface", "pf0vf0", "external_ids:attached-mac") == '"fa:16:3e:00:00:02"'


def test_unplugging_a_missing_port_is_fine_unless_asked_otherwise(ovs, driver):
    driver.del_port("br-int", "pf0vf9")                      # no bridge yet
    driver.add_port("br-int", "pf0vf0", {})
    driver.del_port("br-int", "pf0vf9")                      # bridge, no such port
    with pytest.raises(DriverError, match="no port 'pf0vf9' on bridge 'br-int'"):
        driver.del_port("br-int", "pf0vf9", if_exists=False)
    with pytest.raises(DriverError, match="already exists"):
        driver.add_port("br-int", "pf0vf0", {}, may_exist=False)
    assert ports_on(ovs, "br-int") == ["pf0vf0"]


def test_a_port_on_another_bridge_is_refused_and_nothing_changes(ovs, driver):
    driver.add_port("br-int", "pf0vf0", {"iface-id": PORT_ID})
    with pytest.raises(DriverError, match="port 'pf0vf0' is on bridge 'br-int', not 'br-ex'"):
        driver.add_port("br-ex", "pf0vf0", {"iface-id": "other"})
    driver.del_port("br-ex", "pf0vf0")                       # not on br-ex: nothing to do, br-int keeps it
    assert ovs.vsctl("list-br") == "br-int"                   # the refused plug did not even create br-ex
    assert ovs.vsctl("get", "Interface", "pf0vf0", "external_ids:iface-id") == f'"{PORT_ID}"'


# ------------------------------------------------------------------ batching
def test_500_representors_are_plugged_in_one_transaction(ovs, driver):
    desired = representors(500)
    before = ovs.transactions("dpustack:")

    plugged = driver.plug_many("br-int", desired)

    assert len(plugged) == 500
    assert sorted(ports_on(ovs, "br-int")) == sorted(desired)
    assert ovs.vsctl("get", "Interface", "pf0vf499", "external_ids:attached-mac") == '"fa:16:3e:00:01:f3"'
    assert {p.name: p.external_ids for p in driver.list_ports("br-int")} == desired
    assert ovs.transactions("dpustack:") - before == 1
    assert ovs.transactions("dpustack: plug_many 500 ports into br-int") == 1


def test_replugging_the_same_500_changes_nothing_but_a_new_mac(ovs, driver):
    desired = representors(500)
    driver.plug_many("br-int", desired)
    desired["pf0vf7"] = {**desired["pf0vf7"], "attached-mac": "fa:16:3e:aa:aa:aa"}

    driver.plug_many("br-int", desired)

    assert len(ports_on(ovs, "br-int")) == 500
    assert ovs.vsctl("get", "Interface", "pf0vf7", "external_ids:attached-mac") == '"fa:16:3e:aa:aa:aa"'


def test_one_refused_port_means_none_of_the_batch_is_plugged(ovs, driver):
    driver.add_port("br-ex", "pf0vf3", {})
    with pytest.raises(DriverError, match="port 'pf0vf3' is on bridge 'br-ex'"):
        driver.plug_many("br-int", representors(10))
    assert ovs.vsctl("list-br") == "br-ex"
    assert ports_on(ovs, "br-ex") == ["pf0vf3"]


# ------------------------------------------------------- ovsdb-server restarts
def test_a_plug_during_an_ovsdb_server_restart_waits_for_it_and_succeeds(ovs, driver):
    driver.plug_many("br-int", representors(20))
    ovs.stop_ovsdb()
    comes_back = threading.Timer(1.0, ovs.start_ovsdb)
    comes_back.start()
    try:
        started = time.monotonic()
        driver.add_port("br-int", "pf0vf20", representors(1, start=20)["pf0vf20"])
        waited = time.monotonic() - started
    finally:
        comes_back.join()

    assert 1.0 <= waited < 10
    assert [p.name for p in driver.list_ports("br-int")] == sorted(representors(21))
    assert len(ports_on(ovs, "br-int")) == 21


def test_a_plug_after_an_ovsdb_server_restart_succeeds_and_sees_every_port(ovs, driver):
    driver.plug_many("br-int", representors(20))
    ovs.restart_ovsdb(down_for=0.5)

    driver.add_port("br-int", "pf0vf20", {})

    assert len(driver.list_ports("br-int")) == 21
    assert len(ports_on(ovs, "br-int")) == 21


def test_after_the_database_is_lost_plug_many_restores_the_desired_ports(ovs, driver):
    desired = representors(50)
    driver.plug_many("br-int", desired)
    ovs.restart_ovsdb(lose_database=True)

    assert driver.list_ports() == []                          # the driver sees the empty database, no stale cache
    driver.plug_many("br-int", desired)                       # the agent's reconcile re-plugs what it recorded

    assert {p.name: p.external_ids for p in driver.list_ports("br-int")} == desired
    assert ovs.vsctl("get", "Bridge", "br-int", "datapath_type") == "netdev"


def test_a_server_that_stays_away_is_a_driver_error_within_the_timeout(ovs):
    switch = OvsSwitchDriver(ovs.db, timeout=1.5)
    try:
        switch.add_port("br-int", "pf0vf0", {})
        ovs.stop_ovsdb()
        started = time.monotonic()
        with pytest.raises(DriverError, match=r"ovsdb-server at unix:.*db.sock did not answer "
                                              r"within 1.5 s \(is it running\?\)"):
            switch.add_port("br-int", "pf0vf1", {})
        assert time.monotonic() - started < 5
    finally:
        switch.close()


# -------------------------------------------------------------------- errors
def test_an_invalid_bridge_name_is_a_readable_driver_error(ovs, driver):
    with pytest.raises(DriverError, match="invalid bridge name 'br/int'"):
        driver.add_port("br/int", "pf0vf0", {})
    with pytest.raises(DriverError, match="invalid bridge name 'br-integration-1'.*1-15 bytes"):
        driver.add_port("br-integration-1", "pf0vf0", {})
    with pytest.raises(DriverError, match="port name must be a non-empty string"):
        driver.add_port("br-int", "", {})
    assert ovs.vsctl("list-br") == ""


def test_a_change_the_database_refuses_is_a_readable_driver_error(ovs, driver):
    # a bond already uses the name as one of its interfaces: ovsdb-server's unique index on Interface.name says no
    ovs.vsctl("add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev")
    ovs.vsctl("add-bond", "br-int", "bond0", "p0", "p1")
    with pytest.raises(DriverError) as refused:
        driver.add_port("br-int", "p0", {"iface-id": PORT_ID})
    assert str(refused.value).startswith(
        'switch.add_port: ovsdb-server refused the transaction: constraint violation: Transaction causes multiple '
        'rows in "Interface" table to have identical values (p0) for index on column "name".')
    assert ovs.vsctl("list-ports", "br-int") == "bond0"


def test_bad_external_ids_are_refused_before_they_reach_the_database(ovs, driver):
    with pytest.raises(DriverError, match="external_ids of port 'pf0vf0' must map non-empty strings to strings"):
        driver.add_port("br-int", "pf0vf0", {"vlan": 100})
    assert ovs.vsctl("list-br") == ""


def test_an_unreachable_database_fails_validation_with_its_address(tmp_path):
    switch = OvsSwitchDriver(f"unix:{tmp_path}/nothing.sock", timeout=0.5)
    with pytest.raises(DriverError, match=r"cannot reach ovsdb-server at unix:.*nothing.sock within 0.5 s"):
        switch.validate()


# ----------------------------------------------------------------------- QoS
def test_a_bps_limit_sets_the_interface_ingress_policer(ovs, driver):
    driver.add_port("br-int", "pf0vf0", {})

    driver.set_qos("pf0vf0", bps=10_000_000, pps=None)
    assert ovs.vsctl("get", "Interface", "pf0vf0", "ingress_policing_rate") == "10000"   # kbit/s
    assert ovs.vsctl("get", "Interface", "pf0vf0", "ingress_policing_burst") == "8000"   # kbit, 80%

    driver.set_qos("pf0vf0", bps=1500)                       # rounded up to whole kbit/s, burst >= one frame
    assert ovs.vsctl("get", "Interface", "pf0vf0", "ingress_policing_rate") == "2"
    assert ovs.vsctl("get", "Interface", "pf0vf0", "ingress_policing_burst") == "16"

    driver.set_qos("pf0vf0", bps=None)
    assert ovs.vsctl("get", "Interface", "pf0vf0", "ingress_policing_rate") == "0"


def test_qos_refuses_pps_a_missing_port_and_a_nonsense_rate(ovs, driver):
    driver.add_port("br-int", "pf0vf0", {})
    with pytest.raises(DriverError, match="packet-rate limits .* not supported"):
        driver.set_qos("pf0vf0", bps=None, pps=1000)
    with pytest.raises(DriverError, match="no port 'pf0vf9'"):
        driver.set_qos("pf0vf9", bps=1_000_000)
    with pytest.raises(DriverError, match="bps must be a positive whole number"):
        driver.set_qos("pf0vf0", bps=-5)
    assert ovs.vsctl("get", "Interface", "pf0vf0", "ingress_policing_rate") == "0"


def _our_flows(ovs: OvsSandbox, port_name: str) -> list[str]:
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", f"unix:{ovs.dir}/br-int.mgmt",
                          f"cookie={cookie(port_name)}/-1"], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if "cookie=" in line]


def _netdevs(ovs: OvsSandbox, *names: str) -> None:
    """Netdevs (veth ends) in ovs-vswitchd's namespace, so the ports it opens get ofports."""
    for index, name in enumerate(names):
        ovs.in_netns("ip", "link", "add", name, "type", "veth", "peer", "name", f"peer{index}")
        ovs.in_netns("ip", "link", "set", name, "up")


def test_a_packet_rate_limit_is_a_pktps_meter_and_a_table0_flow_set_again_after_a_wipe(ovs, driver):
    _netdevs(ovs, "pf0vf0", "pf0vf1")
    driver.add_port("br-int", "pf0vf0", {})
    driver.add_port("br-int", "pf0vf1", {})
    assert driver.packet_rate("br-int", "pf0vf0") is None
    driver.set_packet_rate("br-int", "pf0vf0", 1000)
    assert driver.packet_rate("br-int", "pf0vf0") == 1000
    assert driver.packet_rate("br-int", "pf0vf1") is None
    ofport = ovs.vsctl("get", "Interface", "pf0vf0", "ofport")
    [flow] = _our_flows(ovs, "pf0vf0")
    assert "table=0," in flow and f"priority=1000,metadata=0,in_port={ofport} " in flow
    assert f"meter:{meter_id('pf0vf0')}" in flow and meter_id("pf0vf0") > 0xFFFFFF
    driver.set_packet_rate("br-int", "pf0vf0", 2500)  # changed in place
    assert driver.packet_rate("br-int", "pf0vf0") == 2500 and len(_our_flows(ovs, "pf0vf0")) == 1

    # what ovn-controller does to br-int when it reconnects: every flow and meter goes
    for command in ("del-flows", "del-meters"):
        subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", command, f"unix:{ovs.dir}/br-int.mgmt"], check=True)
    assert driver.packet_rate("br-int", "pf0vf0") is None
    driver.set_packet_rate("br-int", "pf0vf0", 2500)  # ... until it is set again
    assert driver.packet_rate("br-int", "pf0vf0") == 2500 and len(_our_flows(ovs, "pf0vf0")) == 1

    driver.set_packet_rate("br-int", "pf0vf0", None)
    driver.set_packet_rate("br-int", "pf0vf0", None)  # clearing twice is fine
    assert driver.packet_rate("br-int", "pf0vf0") is None and _our_flows(ovs, "pf0vf0") == []


def test_a_packet_rate_limit_refuses_a_missing_port_a_bad_rate_and_a_missing_switch_socket(ovs, driver, tmp_path):
    _netdevs(ovs, "pf0vf0")
    driver.add_port("br-int", "pf0vf0", {})
    with pytest.raises(DriverError, match="no port 'pf0vf9' on bridge 'br-int'"):
        driver.set_packet_rate("br-int", "pf0vf9", 1000)
    with pytest.raises(DriverError, match="pps must be a whole number"):
        driver.set_packet_rate("br-int", "pf0vf0", 0)
    elsewhere = OvsSwitchDriver(ovs.db, timeout=2, rundir=str(tmp_path))
    try:
        with pytest.raises(DriverError,
                           match=r"port 'pf0vf0' on br-int: `ovs-ofctl .*` failed: .*\[switch.ovs\] rundir"):
            elsewhere.set_packet_rate("br-int", "pf0vf0", 1000)
    finally:
        elsewhere.close()


# ------------------------------------------------------------------- wiring
def test_two_drivers_in_one_process_each_talk_to_their_own_switch(ovs, driver):
    with OvsSandbox().start() as other_ovs:
        other = OvsSwitchDriver(other_ovs.db, timeout=10)
        try:
            driver.add_port("br-int", "dpu1vf0", {})
            other.add_port("br-int", "dpu2vf0", {})
            assert ports_on(ovs, "br-int") == ["dpu1vf0"]
            assert ports_on(other_ovs, "br-int") == ["dpu2vf0"]
        finally:
            other.close()
