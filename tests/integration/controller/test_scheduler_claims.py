"""The claim is one conditional UPDATE: concurrent schedulers never hand out a slot twice."""

from __future__ import annotations

import threading

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from dpustack.controller import scheduler
from dpustack.db.models import Node, utcnow
from dpustack.db.session import make_engine, make_session_factory, migrate


def test_many_concurrent_claims_for_the_last_slots_only_fill_them(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        session.add(Node(hostname="vm-host", node_type="vm", ready=True, total_cpu=10, total_mem=10240,
                    joined_at=utcnow()))
    demand = scheduler.Demand(node_type="vm", vcpus=2, ram=1024)  # room for exactly 5
    won: list[str] = []
    lost: list[str] = []
    start = threading.Barrier(16)

    def claim() -> None:
        start.wait()
        try:
            with sessions.begin() as session:
                won.append(scheduler.schedule(session, demand, down_after=60, instance_id="i").hostname)
        except scheduler.NoValidNode as exc:
            lost.append(exc.message)

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 5 and len(lost) == 11
    with sessions() as session:
        host = session.scalars(select(Node)).one()
        assert (host.claimed_cpu, host.claimed_mem, host.instance_count) == (10, 5120, 5)
    engine.dispose()


def test_concurrent_requests_for_the_last_free_vfs_get_exactly_one_each(database_url):
    """16 instances each want one VF of a node that has 4 free: exactly 4 get one, never the same."""
    from dpustack.controller.resource_requests import ClaimRace, PciDevices
    from dpustack.db.models import Flavor, Instance, PciDeviceRow, PciRequest, Project
    from dpustack.pci.claims import Need

    engine = make_engine(database_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        project = Project(name="p")
        flavor = Flavor(name="vm.small", vcpus=1, ram=128, disk=1, type="vm")
        node = Node(hostname="vm-host", node_type="vm", ready=True, total_cpu=64, total_mem=65536,
                    joined_at=utcnow())
        session.add_all([project, flavor, node])
        session.flush()
        for vf in range(4):
            address = f"0000:03:00.{vf + 1}"
            info = {"address": address, "vendor_id": "15b3", "product_id": "101e", "dev_type": "type-VF",
                    "parent_addr": "0000:03:00.0", "vf_num": vf}
            session.add(PciDeviceRow(node_id=node.id, address=address, vendor_id="15b3", product_id="101e",
                                     dev_type="type-VF", parent_addr="0000:03:00.0", info=info))
        requests = []
        for n in range(16):
            instance = Instance(name=f"i{n}", project_id=project.id, flavor_id=flavor.id, vcpus=1, ram=128)
            session.add(instance)
            session.flush()
            request = PciRequest(instance_id=instance.id, count=1, flavors=["vf"],
                                 specs=[{"vendor_id": "15b3"}], source="flavor")
            session.add(request)
            session.flush()
            requests.append((instance.id, request.id))
    outcomes: list[str] = []
    start = threading.Barrier(len(requests))

    def claim(instance_id: str, request_id: str) -> None:
        demand = scheduler.Demand(node_type="vm", vcpus=1, ram=128,
                                  resources=(PciDevices(((request_id, Need(1, ({"vendor_id": "15b3"},))),)),))
        start.wait()
        for _ in range(10):  # as the create workflow does: a lost race is tried again
            try:
                with sessions.begin() as session:
                    scheduler.schedule(session, demand, down_after=60, instance_id=instance_id)
                outcomes.append("won")
                return
            except scheduler.NoValidNode:
                outcomes.append("no room")
                return
            except (ClaimRace, OperationalError):
                continue
        outcomes.append("gave up")

    threads = [threading.Thread(target=claim, args=pair) for pair in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["no room"] * 12 + ["won"] * 4
    with sessions() as session:
        owners = [row.instance_id for row in session.scalars(select(PciDeviceRow))]
    assert len(set(owners)) == 4 and None not in owners
    engine.dispose()


def test_concurrent_numa_claims_pin_every_cpu_once_and_no_more(database_url):
    """16 VMs each want 2 dedicated CPUs of a node whose two cells have 4 each: exactly 4 get them, never
    one CPU twice, and each placement is stored with its CPU and RAM claim."""
    from dpustack.controller.numa_fit import numa_request
    from dpustack.controller.resource_requests import ClaimRace, NumaCells
    from dpustack.db.models import Flavor, Instance, Project

    engine = make_engine(database_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    cells = [{"id": 0, "cpus": [0, 1, 2, 3], "memory_mib": 8192}, {"id": 1, "cpus": [4, 5, 6, 7], "memory_mib": 8192}]
    with sessions.begin() as session:
        project = Project(name="p")
        flavor = Flavor(name="vm.pinned", vcpus=2, ram=512, disk=1, type="vm")
        node = Node(hostname="vm-host", node_type="vm", ready=True, total_cpu=64, total_mem=65536, numa_cells=cells,
                    joined_at=utcnow())  # CPU and RAM for all: only the cells limit them
        session.add_all([project, flavor, node])
        session.flush()
        instance_ids = []
        for n in range(16):
            instance = Instance(name=f"i{n}", project_id=project.id, flavor_id=flavor.id, vcpus=2, ram=512)
            session.add(instance)
            session.flush()
            instance_ids.append(instance.id)
    request = numa_request(2, 512, {"hw:cpu_policy": "dedicated"})
    outcomes: list[str] = []
    start = threading.Barrier(len(instance_ids))

    def claim(instance_id: str) -> None:
        demand = scheduler.Demand(node_type="vm", vcpus=2, ram=512, resources=(NumaCells(request, instance_id),))
        start.wait()
        for _ in range(10):  # as the create workflow does: a lost race is tried again
            try:
                with sessions.begin() as session:
                    node = scheduler.schedule(session, demand, down_after=60, instance_id=instance_id)
                    session.get_one(Instance, instance_id).node_id = node.id
                outcomes.append("won")
                return
            except scheduler.NoValidNode:
                outcomes.append("no room")
                return
            except (ClaimRace, OperationalError):
                continue
        outcomes.append("gave up")

    threads = [threading.Thread(target=claim, args=(instance_id,)) for instance_id in instance_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["no room"] * 12 + ["won"] * 4
    with sessions() as session:
        placed = [i.numa_placement for i in session.scalars(select(Instance)) if i.numa_placement]
        host = session.scalars(select(Node)).one()
        assert (host.claimed_cpu, host.instance_count) == (8, 4)
    assert sorted(cpu for p in placed for cell in p["cells"] for cpu in cell["host_cpus"]) == list(range(8))
    engine.dispose()
