"""The claim is one conditional UPDATE: concurrent schedulers never hand out a slot twice."""

from __future__ import annotations

import threading

from sqlalchemy import select

from dpustack.controller import scheduler
from dpustack.db.models import Node
from dpustack.db.session import make_engine, make_session_factory, migrate


def test_many_concurrent_claims_for_the_last_slots_only_fill_them(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        session.add(Node(hostname="vm-host", node_type="vm", ready=True, total_cpu=10, total_mem=10240))
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
