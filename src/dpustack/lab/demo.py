"""`dpustack demo`: a lab of 3 (memory) or 4 (OVN) nodes, every flow of its tours through the API client, one
verdict per flow.

The tours are :mod:`~dpustack.lab.demo_baremetal` and :mod:`~dpustack.lab.demo_pci` on the memory data
plane (3 bare-metal nodes), :mod:`~dpustack.lab.demo_ovn` with :mod:`~dpustack.lab.demo_vm` on the OVN one
(2 bare-metal nodes and 2 VM nodes); what they are made of is :mod:`~dpustack.lab.tour`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from dpustack.lab import lifecycle
from dpustack.lab.demo_baremetal import BareMetalTour
from dpustack.lab.demo_vm import VmTour
from dpustack.lab.demo_pci import PciTour
from dpustack.lab.state import STATE_FILE, LabError
from dpustack.lab.tour import FlowResult, run_flows

DEMO_NODES = 3  # bare-metal nodes of the memory lab
OVN_DEMO_NODES = (2, 2)  # bare-metal and VM nodes of the OVN lab


def run_demo(say: lifecycle.Say, report: Callable[[FlowResult], None],
             dataplane: str = "memory") -> tuple[list[FlowResult], Path]:
    """Run the whole demo in a fresh temporary lab, always tearing it down.

    ``dataplane`` "memory": the flows of the bare-metal tour, then the PCI tour; "ovn": the packet flows of
    :mod:`dpustack.lab.demo_ovn` with the VM flows and moves of :mod:`dpustack.lab.demo_vm` (needs root).
    Returns the results and the lab directory; the directory (with the logs) is removed when every flow passed
    and kept for inspection otherwise.
    """
    if dataplane not in lifecycle.DATAPLANES:
        raise LabError(f"unknown data plane '{dataplane}': choose one of {', '.join(lifecycle.DATAPLANES)}")
    if dataplane == "ovn":
        # short: the OVN daemons' unix socket paths must fit in 107 bytes
        base = tempfile.gettempdir() if len(tempfile.gettempdir()) <= 40 else "/tmp"
        lab_dir = Path(tempfile.mkdtemp(prefix="dps-demo-", dir=base))
    else:
        lab_dir = Path(tempfile.mkdtemp(prefix="dpustack-demo-"))
    results: list[FlowResult] = []
    try:
        if dataplane == "ovn":
            bm, vm = OVN_DEMO_NODES
            lab = lifecycle.up(lab_dir, bm, say, dataplane=dataplane, vm=vm)
        else:
            lab = lifecycle.up(lab_dir, DEMO_NODES, say, dataplane=dataplane)
        with lab.client() as admin:
            if dataplane == "ovn":
                flows = VmTour(admin, lab, say).flows()
            else:
                flows = BareMetalTour(admin, lab).flows() + PciTour(admin, lab).flows()
            results = run_flows(flows, report)
    finally:
        if (lab_dir / STATE_FILE).exists():
            lifecycle.down(lab_dir)
        if results and all(r.result == "passed" for r in results):
            shutil.rmtree(lab_dir, ignore_errors=True)
    return results, lab_dir
