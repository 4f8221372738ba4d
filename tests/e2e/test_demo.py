"""`dpustack demo` (what `make demo` runs): every bare-metal flow passes and the lab is gone after."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_process import processes_naming
from dpustack.lab import demo, demo_baremetal, tour

FLOWS = ["setup: flavor, image, network", "create web1", "create web2 pinned to a node", "add NIC to web1",
         "create and attach volume", "console of web1", "stop web1", "start web1", "hard reboot web1",
         "soft reboot web1", "detach volume", "remove NIC from web1", "other project cannot see web1",
         "create that cannot fit fails cleanly", "delete web1 and web2",
         "PCI devices and pools of every node", "GPU server through a PCI flavor",
         "remote-managed NIC bound to its DPU", "PCI devices freed on delete"]


def test_demo_passes_every_flow_and_cleans_up(tmp_path: Path) -> None:
    result = subprocess.run([str(Path(sys.executable).with_name("dpustack")), "demo"], capture_output=True,
                            text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") >= 4}
    for flow in FLOWS:
        assert flow in rows, f"flow {flow!r} missing from the table:\n{result.stdout}"
        assert "passed" in rows[flow], rows[flow]
    assert f"All {len(FLOWS)} flows passed" in result.stdout
    assert not processes_naming(tmp_path)
    assert list(tmp_path.iterdir()) == []  # the demo's lab directory is gone


def test_a_failing_flow_skips_the_rest_and_still_tears_the_lab_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_console(self: demo_baremetal.BareMetalTour) -> None:
        raise tour.FlowFailed("console refused")

    monkeypatch.setattr(demo_baremetal.BareMetalTour, "console", broken_console)
    results, lab_dir = demo.run_demo(lambda _: None, lambda _: None)
    verdicts = {r.name: r.result for r in results}
    assert verdicts["create and attach volume"] == "passed"
    assert verdicts["console of web1"] == "failed"
    assert verdicts["delete web1 and web2"] == "skipped"
    assert next(r for r in results if r.result == "failed").message == "console refused"
    assert not processes_naming(lab_dir)
    assert (lab_dir / "logs" / "controller.log").exists()  # kept for a post-mortem
    shutil.rmtree(lab_dir)
