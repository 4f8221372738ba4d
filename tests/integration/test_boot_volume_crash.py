"""A controller killed with SIGKILL while it creates a boot volume from an image, or a new volume.

Real processes: `dpustack lab up --bm 1` (the storage node's qemu-storage-daemon, the controller on
the qcow2 volume backend, one memory-driver agent), an image of distinct non-sparse data, a server
create (or a volume create), kill -9 of the controller once the pool holds the new volume's
directory but no index for it, before or after its first layer's file appeared (the create is half
done: a volume exists only once its index does), and a new controller on the same home and database
(same command line and environment, as an init system would restart it). Until then the volume is
`creating`; the resumed operation completes it: the server ends ACTIVE on a boot volume whose NBD
export shows the image's bytes, the new volume `available` with a complete layer showing them, and
the pool holds nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from cli_process import run, take_down
from dpustack.client import Client
from dpustack.db.models import Volume
from dpustack.db.session import make_engine
from dpustack.lab import lifecycle, processes
from dpustack.lab.state import LabProcess, LabState

MiB = 1 << 20
IMAGE_SIZE = 64 * MiB
INDEX = "index.json"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabState]:
    """`lab up --bm 1`; `lab down` afterwards, which also removes the controller's images and pool."""
    lab_dir = tmp_path / "lab"
    try:
        run("lab", "up", "--bm", "1", "--dir", str(lab_dir))
        state = LabState.load(lab_dir)
        assert state is not None
        yield state
    finally:
        take_down(lab_dir)


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


def _kill_while_creating(pid: int, volumes: Path, *, layer_written: bool,
                         timeout: float = 60.0) -> tuple[str, list[str]]:
    """SIGKILL `pid` as soon as the pool's `volumes` holds a volume directory without an index (a create
    under way), and with `layer_written` only once its first layer's file is there too (written, or
    being written, but not named by an index); return the volume id and the directory's files then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            entries = [e for e in os.scandir(volumes) if e.is_dir()]
        except FileNotFoundError:
            entries = []
        for entry in entries:
            try:
                names = os.listdir(entry.path)
            except FileNotFoundError:
                continue
            if INDEX not in names and (not layer_written or any(n.startswith("0.qcow2") for n in names)):
                os.kill(pid, signal.SIGKILL)
                return entry.name, sorted(names)
        time.sleep(0)  # a create takes milliseconds: look again at once
    raise AssertionError(f"no volume creation was seen under way in {volumes} within {timeout:.0f}s")


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
    """An image `big` of distinct data (uploaded, its local file removed) and its sha256."""
    source = tmp_path / "big.img"
    image_sha = _write_image(source, IMAGE_SIZE)
    image = client.post("/v1/images", {"name": "big"})
    assert client.upload_image(image["id"], source)["checksum"] == image_sha
    source.unlink()
    return image, image_sha


def _assert_shows(image_file: Path, target: str, target_format: str) -> None:
    """`target` (a volume's layer, or its NBD export) shows the image's bytes, then zeros to its end."""
    argv = ["qemu-img", "compare", "-q", "-U", "-f", "raw", "-F", target_format, str(image_file), target]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{target} does not show the image {image_file}: {done.stderr}"


def _recorded_status(home: Path, volume_id: str) -> str:
    """The volume's status in the controller's database (read while no controller runs)."""
    engine = make_engine(f"sqlite:///{home / 'controller.db'}")
    try:
        with Session(engine) as session:
            return str(session.get_one(Volume, volume_id).status)
    finally:
        engine.dispose()


def _pool_files(pool: Path) -> dict[str, list[str]]:
    """What the pool holds: its volumes/ entries, each volume directory with its files."""
    return {entry.name: sorted(p.name for p in entry.iterdir()) if entry.is_dir() else []
            for entry in sorted((pool / "volumes").iterdir())}


def _nbd_address(lab: LabState) -> str:
    """nbd://HOST:PORT of the storage node's daemon, as `lab status` shows it."""
    return next(p.url for p in lab.processes if p.name == "storage/qemu-storage-daemon")


def test_a_controller_killed_during_the_boot_volume_create_never_leaves_an_active_server_without_its_data(
        lab: LabState, tmp_path: Path) -> None:
    home = Path(lab.controller_home)
    pool = home / "pool"
    controller = next(p for p in lab.processes if p.role == "controller")
    with Client(lab.controller_url, lab.admin_token(), timeout=300, verify=lab.tls()) as client:
        client.post("/v1/flavors", {"name": "bm.1g", "vcpus": 1, "ram": 1024, "disk": 1, "type": "bm"})
        image, image_sha = _uploaded_image(client, tmp_path)
        client.post("/v1/networks", {"name": "net1", "subnet": "10.10.0.0/24"})
        argv, environ = _proc_cmdline_and_environ(controller.pid)
        operation = client.post("/v1/instances", {"name": "s1", "flavor": "bm.1g", "image": "big",
                                                  "networks": [{"network": "net1"}]})
        cut, files_then = _kill_while_creating(controller.pid, pool / "volumes", layer_written=True)
    _wait_dead(controller)
    assert not (pool / "volumes" / cut / INDEX).exists(), files_then  # the create really was cut short
    assert _recorded_status(home, cut) == "creating"  # so no one is told it is whole

    restarted = _restart(lab, argv, environ, tmp_path / "controller-restarted.log")
    try:
        with Client(lab.controller_url, lab.admin_token(), timeout=60, verify=lab.tls()) as client:
            final = client.wait_operation(operation["id"], timeout=240)
            server = client.get("/v1/instances/s1")
            volumes = client.get("/v1/volumes")
        image_file = home / "images" / image["id"]
        assert final["status"] == "succeeded" and server["status"] == "ACTIVE", (final, server)
        (boot,) = [v for v in volumes if v["id"] in server["volumes"] and v["bootable"]]
        assert boot["status"] == "in-use" and boot["id"] == cut
        index = json.loads((pool / "volumes" / boot["id"] / INDEX).read_text())
        assert index["layers"] == [0] and index["base"] == {"file": str(image_file), "format": "raw"}
        assert _pool_files(pool) == {boot["id"]: ["0.qcow2", INDEX], f"{boot['id']}.lock": []}  # no leftovers
        (attachment,) = boot["attachments"]
        _assert_shows(image_file, f"{_nbd_address(lab)}/{attachment['id']}", "raw")  # what its DPU reads
        assert [p.name for p in (home / "images").iterdir()] == [image["id"]]
        assert hashlib.sha256(image_file.read_bytes()).hexdigest() == image_sha  # the volume never wrote into it
    finally:
        _stop(restarted)


@pytest.mark.parametrize("layer_written", [False, True], ids=["before-its-layer", "its-layer-not-named"])
def test_a_controller_killed_while_it_creates_a_new_volume_never_leaves_it_available_without_its_data(
        lab: LabState, tmp_path: Path, layer_written: bool) -> None:
    home = Path(lab.controller_home)
    pool = home / "pool"
    controller = next(p for p in lab.processes if p.role == "controller")
    with Client(lab.controller_url, lab.admin_token(), timeout=300, verify=lab.tls()) as client:
        image, _ = _uploaded_image(client, tmp_path)
        argv, environ = _proc_cmdline_and_environ(controller.pid)
        created = client.post("/v1/volumes", {"name": "boot1", "image": "big", "size": 1})
        assert created["status"] == "creating"
        cut, files_then = _kill_while_creating(controller.pid, pool / "volumes", layer_written=layer_written)
    _wait_dead(controller)
    assert cut == created["id"] and not (pool / "volumes" / cut / INDEX).exists(), files_then
    assert _recorded_status(home, cut) == "creating"  # not `available` while its data is not there

    restarted = _restart(lab, argv, environ, tmp_path / "controller-restarted.log")
    try:
        with Client(lab.controller_url, lab.admin_token(), timeout=60, verify=lab.tls()) as client:
            final = client.wait_operation(created["operation_id"], timeout=240)
            volume = client.get("/v1/volumes/boot1")
        assert final["status"] == "succeeded" and volume["status"] == "available", (final, volume)
        index = json.loads((pool / "volumes" / volume["id"] / INDEX).read_text())
        assert index["layers"] == [0] and index["pending"] is None
        assert _pool_files(pool) == {volume["id"]: ["0.qcow2", INDEX], f"{volume['id']}.lock": []}  # no leftovers
        _assert_shows(home / "images" / image["id"], str(pool / "volumes" / volume["id"] / "0.qcow2"), "qcow2")
    finally:
        _stop(restarted)
