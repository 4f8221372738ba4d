"""Benchmark: serve N remote volumes on one DPU, one qemu-storage-daemon vs one qemu-nbd per volume.

    .venv/bin/python bench/storage.py [--count 100]

A storage-node namespace and a DPU namespace joined by a veth pair
(tests/storage_daemons.py); the storage node's qemu-storage-daemon serves N
qcow2 volumes as NBD exports. On the DPU, per volume, until the volume is
served and answers a client with its size:

* dpustack: ``QsdStorageDriver.attach`` — one qemu-storage-daemon, one QMP
  connection: an NBD client node and a vhost-user-blk export on the storage
  function's socket; ready when the socket answers VHOST_USER_GET_CONFIG with
  the volume's capacity (what a host's virtio-blk front end asks first);
* baseline: one ``qemu-nbd`` process per volume (the usual per-volume export
  tool) re-exporting the remote volume on a unix socket; ready when that
  socket completes an NBD handshake giving the volume's size.

Each side attaches the N volumes one after the other; the per-volume latency
(p50/p95) and the total are printed, with the ratio baseline / dpustack. Then
the snapshot latency of the storage node while a writer keeps writing through
an export, taken as the qcow2 volume backend takes a snapshot of an attached
volume: ``qemu-img create -u`` of the overlay, ``blockdev-add`` of it and
``blockdev-snapshot`` on the storage node's daemon.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from storage_daemons import DpuDaemon, StorageNode, disk_size, storage_network  # noqa: E402

from dpustack.drivers.storage.qsd import QsdStorageDriver  # noqa: E402

VOLUME_SIZE = 64 << 20
READY_TIMEOUT = 10.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def nbd_size(path: Path) -> int:
    """The export size a fixed-newstyle NBD server on ``path`` announces for the default export."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(2)
        client.connect(str(path))
        greeting = _recv(client, 18)  # NBDMAGIC, IHAVEOPT, handshake flags
        flags = struct.unpack_from(">H", greeting, 16)[0]
        no_zeroes = flags & 2
        client.sendall(struct.pack(">I", 1 | no_zeroes))  # fixed newstyle (+ no zeroes if offered)
        client.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 0))  # NBD_OPT_EXPORT_NAME ""
        reply = _recv(client, 10 if no_zeroes else 134)
        return struct.unpack_from(">Q", reply)[0]


def _recv(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = client.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the server hung up during the handshake")
        data += chunk
    return data


def wait_ready(probe, path: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            if probe(path) == VOLUME_SIZE:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not serve the volume within {READY_TIMEOUT:g}s")
        time.sleep(0.001)


def with_driver(storage: StorageNode, dpu: DpuDaemon, socket_dir: Path, volumes: list[str]) -> list[float]:
    driver = QsdStorageDriver(qmp_socket=dpu.qmp_socket, socket_dir=socket_dir, timeout=10)
    latencies = []
    try:
        for volume in volumes:
            started = time.perf_counter()
            driver.attach(f"storage-{volume}", volume, storage.uri(volume))
            wait_ready(disk_size, driver.socket_path(f"storage-{volume}"))
            latencies.append(time.perf_counter() - started)
        for volume in volumes:
            driver.detach(f"storage-{volume}", volume)
    finally:
        driver.close()
    return latencies


def with_qemu_nbd(storage: StorageNode, dpu_netns: str, socket_dir: Path, volumes: list[str]) -> list[float]:
    latencies = []
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for volume in volumes:
            path = socket_dir / f"nbd-{volume}.sock"
            started = time.perf_counter()
            servers.append(subprocess.Popen(
                ["ip", "netns", "exec", dpu_netns, "qemu-nbd", "-f", "raw", "--persistent", f"--socket={path}",
                 storage.uri(volume)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
            wait_ready(nbd_size, path)
            latencies.append(time.perf_counter() - started)
    finally:
        for server in servers:
            server.kill()
        for server in servers:
            server.wait(10)
    return latencies


def snapshot_latency(storage: StorageNode, volume: str, count: int) -> list[float]:
    """Snapshots of ``volume``'s node on the storage node while qemu-io writes through its export."""
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            subprocess.run(["ip", "netns", "exec", storage.netns, "qemu-io", "-f", "raw", "-c",
                            f"write -P 0x5a 0 {4 << 20}", storage.uri(volume)], capture_output=True, check=False)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    time.sleep(0.3)
    latencies = []
    node = storage.node_of(volume)
    try:
        for n in range(count):
            below = storage.workdir / (f"{volume}.qcow2" if n == 0 else f"{volume}.snap{n - 1}.qcow2")
            overlay = storage.workdir / f"{volume}.snap{n}.qcow2"
            started = time.perf_counter()
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(below), "-F", "qcow2", "-u",
                            str(overlay), str(VOLUME_SIZE)], check=True)
            storage.qmp("blockdev-add", {"driver": "qcow2", "node-name": f"{node}s{n}", "backing": None,
                                         "file": {"driver": "file", "filename": str(overlay)}})
            storage.qmp("blockdev-snapshot", {"node": node, "overlay": f"{node}s{n}"})
            latencies.append(time.perf_counter() - started)
            node = f"{node}s{n}"
            time.sleep(0.05)
    finally:
        stop.set()
        writer.join(30)
    return latencies


def report(name: str, latencies: list[float]) -> None:
    print(f"  {name:<34} total {sum(latencies):7.3f} s   p50 {percentile(latencies, .5) * 1000:7.2f} ms   "
          f"p95 {percentile(latencies, .95) * 1000:7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="volumes to attach (default 100)")
    parser.add_argument("--snapshots", type=int, default=10, help="snapshots to time under a writer (default 10)")
    args = parser.parse_args()
    volumes = [f"vol{n:03d}" for n in range(args.count)]
    workdir = Path(tempfile.mkdtemp(prefix="dpustack-bench-storage-"))
    try:
        with storage_network() as (storage_netns, dpu_netns, address):
            storage = StorageNode(storage_netns, address, workdir, {v: VOLUME_SIZE for v in volumes}, qmp=True)
            storage.daemon.start()
            dpu = DpuDaemon(dpu_netns, workdir)
            dpu.start()
            sockets = workdir / "vhost"
            sockets.mkdir()
            try:
                print(f"{args.count} volumes of {VOLUME_SIZE >> 20} MiB, served over NBD from the storage node "
                      "namespace to the DPU namespace; per volume until it answers a client with its size:")
                ours = with_driver(storage, dpu, sockets, volumes)
                theirs = with_qemu_nbd(storage, dpu_netns, sockets, volumes)
                report("dpustack (qsd driver, one daemon)", ours)
                report("baseline (one qemu-nbd per volume)", theirs)
                print(f"  ratio baseline/dpustack: total {sum(theirs) / sum(ours):.2f}x, "
                      f"p50 {percentile(theirs, .5) / percentile(ours, .5):.2f}x")
                snaps = snapshot_latency(storage, volumes[0], args.snapshots)
                print(f"snapshot of a volume under a writer, on the storage node ({len(snaps)} taken): "
                      f"p50 {percentile(snaps, .5) * 1000:.2f} ms, p95 {percentile(snaps, .95) * 1000:.2f} ms")
            finally:
                dpu.kill()
                storage.daemon.kill()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
