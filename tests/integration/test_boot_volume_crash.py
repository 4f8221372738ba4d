"""A controller killed with SIGKILL while it copies an image into a boot volume, or into a new volume.

Real processes: `dpustack lab up --bm 1` (controller + one memory-driver agent), a 1 GiB image of
non-sparse data, a server create (or a volume create), kill -9 of the controller while the volume
file grows, and a new controller on the same home and database (same command line and environment,
as an init system would restart it). The resumed build must end with a boot volume equal to the
image, or in ERROR with a fault; never ACTIVE on a truncated disk, and never with a partial file
left behind. A volume made from the image is never `available` until its data equals the image.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_process import run
from dpustack.client import Client
from dpustack.lab import lifecycle, processes
from dpustack.lab.state import LabProcess, LabState

GiB = 1 << 30
MiB = 1 << 20


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabState]:
    """`lab up --bm 1`; `lab down` afterwards, which also removes the controller's images and volumes."""
    lab_dir = tmp_path / "lab"
    try:
        run("lab", "up", "--bm", "1", "--dir", str(lab_dir))
        state = LabState.load(lab_dir)
        assert state is not None
        yield state
    finally:
        state = LabState.load(lab_dir)
        recorded = [(p.pid, p.started) for p in state.processes] if state else []
        run("lab", "down", "--dir", str(lab_dir), ok=False)
        for pid, started in recorded:
            processes.stop(pid, started, timeout=2)


def _write_image(path: Path, size: int) -> str:
    """`size` bytes with no zero-filled holes (each MiB distinct); returns their sha256."""
    block = bytearray(random.Random(7).randbytes(MiB))
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for index in range(size // MiB):
            block[:8] = (index + 1).to_bytes(8, "little")
            out.write(block)
            digest.update(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _kill_while_copying(pid: int, volumes: Path, size: int, timeout: float = 60.0) -> tuple[str, int]:
    """SIGKILL `pid` as soon as `volumes` holds an unfinished volume file; return its name and size then.

    Unfinished: a file holding part of the image, or one still under a temporary `.part` name.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.scandir(volumes):
            written = entry.stat().st_size
            if 0 < written < size or entry.name.endswith(".part"):
                os.kill(pid, signal.SIGKILL)
                return entry.name, written
        time.sleep(0.0005)
    raise AssertionError(f"no volume file started growing in {volumes} within {timeout:.0f}s")


def _proc_cmdline_and_environ(pid: int) -> tuple[list[str], dict[str, str]]:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    pairs = (item.split(b"=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item)
    return [a.decode() for a in argv], {k.decode(): v.decode() for k, v in pairs}


def _wait_healthy(lab: LabState, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the restarted controller exited:\n{log.read_text()}"
        if lifecycle.healthy(lab, lab.controller_url):
            return
        time.sleep(0.1)
    raise AssertionError(f"the restarted controller did not answer within {timeout:.0f}s:\n{log.read_text()}")


def _restart(lab: LabState, argv: list[str], environ: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The controller again, on the same home and database; a short lease, so it takes over the dead
    one's operation at once."""
    with log.open("ab") as out:
        restarted = subprocess.Popen(argv, env={**environ, "DPUSTACK_LEASE_SECONDS": "1"}, cwd=lab.dir,
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    _wait_healthy(lab, restarted, log)
    return restarted


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _wait_dead(controller: LabProcess) -> None:
    deadline = time.monotonic() + 10
    while processes.is_alive(controller.pid, controller.started):
        assert time.monotonic() < deadline, "the killed controller is still alive"
        time.sleep(0.05)


def _uploaded_image(client: Client, tmp_path: Path) -> tuple[dict, str]:
    """A 1 GiB image `big` of distinct data (uploaded, its local file removed) and its sha256."""
    source = tmp_path / "big.img"
    image_sha = _write_image(source, GiB)
    image = client.post("/v1/images", {"name": "big"})
    assert client.upload_image(image["id"], source)["checksum"] == image_sha
    source.unlink()
    return image, image_sha


def test_a_controller_killed_during_the_boot_volume_copy_never_leaves_a_truncated_active_server(
        lab: LabState, tmp_path: Path) -> None:
    home = Path(lab.controller_home)
    controller = next(p for p in lab.processes if p.role == "controller")
    with Client(lab.controller_url, lab.admin_token(), timeout=300, verify=lab.tls()) as client:
        client.post("/v1/flavors", {"name": "bm.1g", "vcpus": 1, "ram": 1024, "disk": 1, "type": "bm"})
        image, image_sha = _uploaded_image(client, tmp_path)
        client.post("/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"})
        argv, environ = _proc_cmdline_and_environ(controller.pid)
        operation = client.post("/v1/instances", {"name": "s1", "flavor": "bm.1g", "image": "big",
                                                  "networks": [{"network": "net1"}]})
        name, written = _kill_while_copying(controller.pid, home / "volumes", GiB)
    assert name.endswith(".part") or written < GiB  # the copy really was cut short
    _wait_dead(controller)

    restarted = _restart(lab, argv, environ, tmp_path / "controller-restarted.log")
    try:
        with Client(lab.controller_url, lab.admin_token(), timeout=60, verify=lab.tls()) as client:
            final = client.wait_operation(operation["id"], timeout=240)
            server = client.get("/v1/instances/s1")
            volumes = client.get("/v1/volumes")
        if server["status"] == "ACTIVE":
            assert final["status"] == "succeeded", final
            (boot,) = [v for v in volumes if v["id"] in server["volumes"] and v["bootable"]]
            assert boot["status"] == "in-use"
            assert _sha256(home / "volumes" / f"{boot['id']}.img") == image_sha
            assert sorted(p.name for p in (home / "volumes").iterdir()) == [f"{boot['id']}.img"]
        else:
            assert server["status"] == "ERROR" and server["fault"]["message"], server
            assert volumes == [] and list((home / "volumes").iterdir()) == []
        assert [p.name for p in (home / "images").iterdir()] == [image["id"]]
    finally:
        _stop(restarted)


def test_a_controller_killed_while_it_fills_a_new_volume_never_leaves_it_available_with_partial_data(
        lab: LabState, tmp_path: Path) -> None:
    home = Path(lab.controller_home)
    controller = next(p for p in lab.processes if p.role == "controller")
    with Client(lab.controller_url, lab.admin_token(), timeout=300, verify=lab.tls()) as client:
        _, image_sha = _uploaded_image(client, tmp_path)
        argv, environ = _proc_cmdline_and_environ(controller.pid)
        created = client.post("/v1/volumes", {"name": "boot1", "image": "big", "size": 1})
        assert created["status"] == "creating"
        _kill_while_copying(controller.pid, home / "volumes", GiB)
    _wait_dead(controller)

    restarted = _restart(lab, argv, environ, tmp_path / "controller-restarted.log")
    try:
        with Client(lab.controller_url, lab.admin_token(), timeout=60, verify=lab.tls()) as client:
            final = client.wait_operation(created["operation_id"], timeout=240)
            volume = client.get("/v1/volumes/boot1")
        if volume["status"] == "available":
            assert final["status"] == "succeeded", final
            assert _sha256(home / "volumes" / f"{volume['id']}.img") == image_sha
            assert [p.name for p in (home / "volumes").iterdir()] == [f"{volume['id']}.img"]
        else:
            assert volume["status"] == "error" and volume["fault"]["message"], volume
            assert list((home / "volumes").iterdir()) == []
    finally:
        _stop(restarted)
