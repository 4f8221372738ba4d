"""The ``qsd`` StorageDriver against real qemu-storage-daemons: a storage node and a DPU.

The storage node (its own namespace) serves two qcow2 volumes as NBD exports;
the DPU's daemon (another namespace, joined by a veth pair) is driven by the
driver over QMP, so volume traffic crosses a network. QEMU 7.2 here has no
libblkio, so no block-layer client can open a vhost-user-blk socket: the
tests talk vhost-user to it by hand for what the device says (its size), and
move bytes through an NBD export of the driver's node that the test adds on
the DPU's daemon itself.
"""

from __future__ import annotations

import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpustack.agent.app import create_app
from dpustack.agent.config import parse_config
from dpustack.agent.hardware import DriverSet
from dpustack.drivers.bmc.memory import MemoryBmcDriver
from dpustack.drivers.functions.memory import MemoryFunctionDriver
from dpustack.drivers.storage import Attachment
from dpustack.drivers.storage.nbd_uri import parse_nbd_uri
from dpustack.drivers.storage.qsd import QsdStorageDriver
from dpustack.drivers.storage.qsd_names import export_id, node_name
from dpustack.drivers.switch.memory import MemorySwitchDriver
from dpustack.errors import DriverError
from dpustack.secrets import digest
from storage_daemons import DpuDaemon, StorageNode, disk_size, storage_network

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns about its httpx-based TestClient
    from fastapi.testclient import TestClient

VOLUME_SIZE = 4 * 1024 * 1024
AGENT_TOKEN = "controller-to-agent-secret"


@pytest.fixture(scope="module")
def network() -> Iterator[tuple[str, str, str]]:
    with storage_network() as names:
        yield names


@pytest.fixture(scope="module")
def storage(network) -> Iterator[StorageNode]:
    storage_netns, _, address = network
    workdir = Path(tempfile.mkdtemp(prefix="qsd-stor-", dir="/tmp"))
    node = StorageNode(storage_netns, address, workdir, {"vol-a": VOLUME_SIZE, "vol-b": VOLUME_SIZE})
    try:
        node.daemon.start()
        yield node
    finally:
        node.daemon.kill()
        shutil.rmtree(workdir)


@pytest.fixture
def dpu(network) -> Iterator[DpuDaemon]:
    workdir = Path(tempfile.mkdtemp(prefix="qsd-dpu-", dir="/tmp"))
    daemon = DpuDaemon(network[1], workdir)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.kill()
        shutil.rmtree(workdir)


@pytest.fixture
def driver(dpu: DpuDaemon) -> Iterator[QsdStorageDriver]:
    qsd = QsdStorageDriver(qmp_socket=dpu.qmp_socket, socket_dir=dpu.qmp_socket.parent / "fn", timeout=10)  # the default: a loaded CI machine is slow
    try:
        yield qsd
    finally:
        qsd.close()


def is_socket(path: Path) -> bool:
    return path.exists() and stat.S_ISSOCK(path.stat().st_mode)


# ------------------------------------------------------------------ attach
def test_an_attached_volume_is_served_on_the_functions_socket_and_listed(storage, driver):
    attachment = driver.attach("storage-a", "vol-a", storage.uri("vol-a"))

    assert attachment == Attachment("storage-a", "vol-a", storage.uri("vol-a"))
    socket_path = driver.socket_path("storage-a")
    assert socket_path == driver.socket_dir / "storage-a.sock"
    assert is_socket(socket_path)
    assert disk_size(socket_path) == VOLUME_SIZE
    assert driver.list() == [attachment]


def test_attaching_the_same_volume_again_changes_nothing(storage, driver, dpu):
    first = driver.attach("storage-a", "vol-a", storage.uri("vol-a"))
    exports = dpu.qmp("query-block-exports")

    # the default port spelled out or not: the same address
    assert driver.attach("storage-a", "vol-a", storage.uri("vol-a").replace(":10809", "")) == first
    assert dpu.qmp("query-block-exports") == exports
    with pytest.raises(DriverError, match="volume 'vol-a' is already attached"):
        driver.attach("storage-a", "vol-a", storage.uri("vol-a"), may_exist=False)


def test_a_conflicting_attachment_is_refused_and_leaves_the_daemon_as_it_was(storage, driver, dpu):
    driver.attach("storage-a", "vol-a", storage.uri("vol-a"))
    nodes = len(dpu.qmp("query-named-block-nodes", {"flat": True}))

    with pytest.raises(DriverError, match=r"volume 'vol-a' is attached to function 'storage-a' from 'nbd://"):
        driver.attach("storage-b", "vol-a", storage.uri("vol-a"))
    with pytest.raises(DriverError, match="volume 'vol-a' is attached to function 'storage-a' from"):
        driver.attach("storage-a", "vol-a", storage.uri("vol-b"))
    with pytest.raises(DriverError, match="function 'storage-a' already serves volume 'vol-a'"):
        driver.attach("storage-a", "vol-b", storage.uri("vol-b"))

    assert driver.list() == [Attachment("storage-a", "vol-a", storage.uri("vol-a"))]
    assert len(dpu.qmp("query-named-block-nodes", {"flat": True})) == nodes


def test_an_attach_that_fails_half_way_leaves_no_node_behind(storage, driver, dpu):
    with pytest.raises(DriverError, match=r"volume 'vol-x' at nbd://.*: qemu-storage-daemon refused blockdev-add"):
        driver.attach("storage-x", "vol-x", storage.uri("no-such-export"))
    # the export fails after the node was added: the socket directory cannot be made
    blocked = driver.socket_dir
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("a file where the socket directory should be")
    with pytest.raises(DriverError, match="cannot make the socket directory"):
        driver.attach("storage-a", "vol-a", storage.uri("vol-a"))

    assert dpu.qmp("query-named-block-nodes", {"flat": True}) == []
    assert driver.list() == []


def test_a_node_left_by_an_interrupted_attach_is_taken_over_or_removed(storage, driver, dpu):
    def leave_node(volume: str, uri: str) -> None:  # what an agent killed between the two steps leaves
        address = parse_nbd_uri(uri)
        dpu.qmp("blockdev-add", {"driver": "nbd", "node-name": node_name(volume), "server": address.qmp_server(),
                                 "export": address.export})

    leave_node("vol-a", storage.uri("vol-b"))  # and the volume is then attached from elsewhere
    leave_node("vol-b", storage.uri("vol-b"))

    assert driver.attach("storage-a", "vol-a", storage.uri("vol-a")).uri == storage.uri("vol-a")
    assert driver.list() == [Attachment("storage-a", "vol-a", storage.uri("vol-a"))]
    driver.detach("storage-b", "vol-b")

    assert [node["node-name"] for node in dpu.qmp("query-named-block-nodes", {"flat": True})] == [node_name("vol-a")]


def test_a_bad_uri_or_function_id_is_refused_before_the_daemon_is_asked(driver):
    with pytest.raises(DriverError, match=r"volume 'vol-a': 'iscsi://10.0.0.1/vol-a': unknown scheme"):
        driver.attach("storage-a", "vol-a", "iscsi://10.0.0.1/vol-a")
    with pytest.raises(DriverError, match=r"function id '../a' cannot name a socket file"):
        driver.attach("../a", "vol-a", "nbd://10.0.0.1/vol-a")
    with pytest.raises(DriverError, match=r"is longer than a unix socket path may be \(107 bytes\)"):
        driver.attach("f" * 100, "vol-a", "nbd://10.0.0.1/vol-a")


# ------------------------------------------------------------------ detach
def test_detach_removes_the_export_the_node_and_the_socket(storage, driver, dpu):
    driver.attach("storage-a", "vol-a", storage.uri("vol-a"))
    driver.attach("storage-b", "vol-b", storage.uri("vol-b"))

    driver.detach("storage-a", "vol-a")

    assert driver.list() == [Attachment("storage-b", "vol-b", storage.uri("vol-b"))]
    assert not driver.socket_path("storage-a").exists()
    assert [node["node-name"] for node in dpu.qmp("query-named-block-nodes", {"flat": True})] == [
        export["node-name"] for export in dpu.qmp("query-block-exports")]
    driver.detach("storage-a", "vol-a")  # gone already: fine
    with pytest.raises(DriverError, match="volume 'vol-a' is not attached to function 'storage-a'"):
        driver.detach("storage-a", "vol-a", if_exists=False)
    with pytest.raises(DriverError, match="volume 'vol-b' is not attached to function 'storage-a'"):
        driver.detach("storage-a", "vol-b", if_exists=False)
    assert len(driver.list()) == 1


def test_detach_cuts_off_a_connected_client(storage, driver):
    driver.attach("storage-a", "vol-a", storage.uri("vol-a"))
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(driver.socket_path("storage-a")))
        client.settimeout(2)

        driver.detach("storage-a", "vol-a")

        assert client.recv(1) == b""  # the daemon hung up
    assert driver.list() == []


# ------------------------------------------------------------ bytes flow
def probe(dpu: DpuDaemon, function_id: str, volume_id: str) -> str:
    """An NBD export (URI) of the node the driver serves the volume from, on the DPU's daemon: what
    the host reads and writes through the function's socket, reachable by qemu-io."""
    node = next(e["node-name"] for e in dpu.qmp("query-block-exports") if e["id"] == export_id(function_id, volume_id))
    path = dpu.qmp_socket.parent / "probe.sock"
    dpu.qmp("nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(path)}}})
    dpu.qmp("block-export-add", {"type": "nbd", "id": "probe", "node-name": node, "name": "probe",
                                 "writable": True})
    return f"nbd+unix:///probe?socket={path}"


def test_bytes_written_on_the_dpu_land_in_the_volume_on_the_storage_node(storage, driver, dpu):
    driver.attach("storage-b", "vol-b", storage.uri("vol-b"))

    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0xa5 65536 65536", probe(dpu, "storage-b", "vol-b")],
                   check=True, capture_output=True)

    assert storage.holds("vol-b", 0xa5, 65536, 65536)
    assert storage.holds("vol-b", 0, 0, 65536) and storage.holds("vol-b", 0, 131072, 65536)
    assert driver.list() == [Attachment("storage-b", "vol-b", storage.uri("vol-b"))]  # the probe is not one
    dpu.qmp("block-export-del", {"id": "probe"})
    dpu.qmp("nbd-server-stop")


def test_io_issued_while_the_storage_node_restarts_waits_for_it_and_lands(storage, driver, dpu):
    assert driver.reconnect_delay == 5  # the default: the NBD client reconnects and holds the I/O meanwhile
    driver.attach("storage-b", "vol-b", storage.uri("vol-b"))
    uri = probe(dpu, "storage-b", "vol-b")
    written: list[subprocess.CompletedProcess[str]] = []
    writer = threading.Thread(target=lambda: written.append(subprocess.run(
        ["qemu-io", "-f", "raw", "-c", "write -P 0x5b 2M 64k", uri], capture_output=True, text=True, timeout=20)))

    storage.daemon.kill()  # kill -9 of the storage node's daemon
    try:
        writer.start()
        time.sleep(0.3)
        assert writer.is_alive(), written  # held, not failed
    finally:
        storage.daemon.start()
    writer.join(20)

    (done,) = written
    assert done.returncode == 0 and "wrote 65536/65536 bytes" in done.stdout, (done.stdout, done.stderr)
    assert storage.holds("vol-b", 0x5b, 2 << 20, 65536)
    assert driver.list() == [Attachment("storage-b", "vol-b", storage.uri("vol-b"))]


# ------------------------------------------------------ a daemon that fails
def test_after_a_daemon_restart_the_next_call_reconnects_and_attach_restores_the_export(storage, driver, dpu):
    driver.attach("storage-a", "vol-a", storage.uri("vol-a"))
    socket_path = driver.socket_path("storage-a")

    dpu.kill()
    dpu.start()

    assert driver.list() == []  # the same driver, a new connection, a daemon that knows nothing
    assert driver.attach("storage-a", "vol-a", storage.uri("vol-a")) == Attachment(
        "storage-a", "vol-a", storage.uri("vol-a"))
    assert is_socket(socket_path) and disk_size(socket_path) == VOLUME_SIZE
    assert driver.list() == [Attachment("storage-a", "vol-a", storage.uri("vol-a"))]


def test_a_volume_detached_while_the_daemon_was_away_leaves_no_socket_file(storage, driver, dpu):
    driver.attach("storage-a", "vol-a", storage.uri("vol-a"))
    dpu.kill()  # the socket file stays behind
    dpu.start()

    driver.detach("storage-a", "vol-a")

    assert not driver.socket_path("storage-a").exists()


def test_a_killed_daemon_is_a_readable_error_until_it_is_back(driver, dpu):
    driver.validate()

    dpu.kill()
    with pytest.raises(DriverError, match=r"storage.list: cannot reach qemu-storage-daemon at .*qmp.sock: "
                                          r"connection refused \(it is not running\)"):
        driver.list()
    with pytest.raises(DriverError, match="storage.validate: cannot reach qemu-storage-daemon"):
        driver.validate()

    dpu.start()
    driver.validate()


def test_the_agents_reconcile_puts_every_export_back_after_a_daemon_restart(storage, driver, dpu, tmp_path):
    drivers = DriverSet(MemoryFunctionDriver(), MemorySwitchDriver(), driver, MemoryBmcDriver(cpu=8, mem=16384))
    config = parse_config({"hostname": "dpu-1", "state_dir": str(tmp_path / "state"), "insecure": True,
                           "controller": {"url": "http://127.0.0.1:9", "token": "agent-role-token"},
                           "api": {"controller_credential_sha256": digest(AGENT_TOKEN)}})
    with TestClient(create_app(config, drivers=drivers, start_background=False)) as client:
        built = client.post("/v1/instances", headers={"Authorization": f"Bearer {AGENT_TOKEN}"}, json={
            "uuid": "inst-1", "name": "bm-1", "image": "cirros",
            "flavor": {"name": "bm.small", "vcpus": 1, "ram": 1024, "disk": 1}, "networks": [],
            "volumes": [{"volume_id": "vol-a", "uri": storage.uri("vol-a"), "bootable": True},
                        {"volume_id": "vol-b", "uri": storage.uri("vol-b")}]})
        assert built.status_code == 200, built.text
        served = driver.list()
        assert [a.volume_id for a in served] == ["vol-a", "vol-b"]

        dpu.kill()
        dpu.start()
        result = client.app.state.service.reconciler.run()

        assert result.ok, result.errors
        assert driver.list() == served
        for attachment in served:
            assert disk_size(driver.socket_path(attachment.function_id)) == VOLUME_SIZE


def test_a_daemon_that_does_not_answer_fails_the_call_within_the_timeout(dpu):
    slow = QsdStorageDriver(qmp_socket=dpu.qmp_socket, socket_dir=dpu.qmp_socket.parent / "fn", timeout=0.3)
    try:
        slow.validate()
        dpu.process.send_signal(signal.SIGSTOP)  # the daemon hangs
        started = time.monotonic()
        with pytest.raises(DriverError, match=r"storage.list: qemu-storage-daemon at .* did not answer "
                                              r"query-block-exports within 0.3 s"):
            slow.list()
        assert time.monotonic() - started < 1.5
    finally:
        dpu.process.send_signal(signal.SIGCONT)
        slow.close()


def test_a_missing_daemon_socket_is_named(tmp_path):
    absent = QsdStorageDriver(qmp_socket=tmp_path / "qmp.sock", socket_dir=tmp_path / "fn", timeout=1)
    with pytest.raises(DriverError, match=r"cannot reach qemu-storage-daemon at .*qmp.sock: no QMP socket there"):
        absent.validate()
    absent.close()


# ------------------------------------------------------------- many calls
class ConnectionCounter:
    """A unix socket in front of the daemon's QMP socket, counting the connections made through it."""

    def __init__(self, target: Path, path: Path):
        self.target = target
        self.path = path
        self.connections = 0
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(str(path))
        self._listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(str(self.target))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._listener.close()


def test_every_call_goes_over_one_connection_until_the_daemon_restarts(storage, dpu):
    counter = ConnectionCounter(dpu.qmp_socket, dpu.qmp_socket.parent / "counted.sock")
    qsd = QsdStorageDriver(qmp_socket=counter.path, socket_dir=dpu.qmp_socket.parent / "fn", timeout=2)
    try:
        for volume in ("vol-a", "vol-b"):
            qsd.attach(f"storage-{volume}", volume, storage.uri(volume))
        qsd.list()
        qsd.detach("storage-vol-a", "vol-a")
        qsd.validate()
        assert counter.connections == 1

        dpu.kill()
        dpu.start()
        assert qsd.list() == []
        assert counter.connections == 2
    finally:
        qsd.close()
        counter.close()


def test_calls_from_several_threads_at_once_all_succeed(storage, driver):
    errors: list[Exception] = []

    def attach_and_detach(volume: str) -> None:
        try:
            for _ in range(5):
                driver.attach(f"storage-{volume}", volume, storage.uri(volume))
                driver.detach(f"storage-{volume}", volume)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(10):
                driver.list()
                driver.validate()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=attach_and_detach, args=(volume,)) for volume in ("vol-a", "vol-b")]
    threads += [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert errors == []
    assert driver.list() == []
