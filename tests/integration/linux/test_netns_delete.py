"""Deleting a namespace takes its veths' peers in other namespaces with it at once, even while the kernel keeps
the deleted namespace alive (root)."""

from __future__ import annotations

import os
import subprocess

from dpustack.linux import netns
from netns import ip_link, namespaces


def test_a_deleted_namespace_kept_alive_loses_its_veths_and_their_peers_at_once():
    with namespaces("del-dpu", "del-host") as names:
        dpu, host = names["del-dpu"], names["del-host"]
        subprocess.run(["ip", "-n", host, "link", "add", "ens5f0", "type", "veth", "peer", "name", "pf5hpf",
                        "netns", dpu], check=True)
        subprocess.run(["ip", "-n", dpu, "link", "add", "a0", "type", "veth", "peer", "name", "b0"], check=True)
        holder = os.open(f"{netns.RUN_DIR}/{dpu}", os.O_RDONLY)  # as an orphaned socket would: it lives on
        try:
            netns.delete(dpu)
            assert not netns.exists(dpu)
            assert ip_link(host, "ens5f0") is None  # the host's end of the representor's pair went with it
        finally:
            os.close(holder)
