"""The reconciler re-plugs lost ports in one switch call, and one by one when that call fails."""

from __future__ import annotations

from .conftest import Agent


def _unplug_all(agent: Agent) -> dict[str, str]:
    """Lose every port, as a SoC reboot does; return port id -> representor."""
    representors = {}
    for port in agent.drivers.switch.list_ports():
        representors[port.external_ids["iface-id"]] = port.name
        agent.drivers.switch.del_port(port.bridge, port.name)
    return representors


def test_every_lost_port_is_replugged_in_one_switch_call(built: Agent, monkeypatch):
    representors = _unplug_all(built)
    switch = built.drivers.switch
    batches = []
    plug_many = switch.plug_many
    monkeypatch.setattr(switch, "plug_many", lambda bridge, ports, **kw: batches.append(
        (bridge, sorted(ports))) or plug_many(bridge, ports, **kw))

    result = built.service.reconciler.run()

    assert result.ok
    assert batches == [("br-int", sorted(representors.values()))]
    assert {p.external_ids["iface-id"]: p.name for p in switch.list_ports()} == representors


def test_a_port_that_cannot_be_plugged_does_not_hold_back_the_others(built: Agent):
    representors = _unplug_all(built)
    built.drivers.switch.add_port("br-ex", representors["port-a"], {})  # someone took its name on another bridge

    result = built.service.reconciler.run()

    assert not result.ok
    assert "re-plugged port port-b as br-int/" + representors["port-b"] in result.repaired
    [port_b] = [p for p in built.drivers.switch.list_ports("br-int")]
    assert port_b.external_ids["iface-id"] == "port-b"
    instance = built.get("/v1/instances/inst-1").json()
    assert instance["status"] == "ERROR"
    assert f"port '{representors['port-a']}' is on bridge 'br-ex'" in instance["fault"]


def test_a_port_still_plugged_for_a_recreated_function_is_unplugged_and_plugged_again(built: Agent):
    built.drivers.functions.delete("net-port-a")  # the representor netdev is gone; its switch port is not
    built.forget_calls()

    result = built.service.reconciler.run()

    assert result.ok
    # the switch must open the new netdev: a port left in place may hold the old one
    assert built.drivers.switch.faults.calls == ["list_ports", "del_port", "add_port", "list_ports"]
    assert "port-a" in {p.external_ids["iface-id"] for p in built.drivers.switch.list_ports()}
