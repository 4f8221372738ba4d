"""What the host sees: a real guest reads and writes a volume attached through the ``qsd`` driver.

The storage node (its own namespace) serves a qcow2 volume over NBD; the
DPU's qemu-storage-daemon (another namespace, across a veth pair) is driven
by the driver, which attaches the volume to a storage function: a
vhost-user-blk socket. A QEMU guest (TCG, the lab's Debian cloud kernel and
a busybox initramfs) gets that socket as its virtio-blk disk, the way the
host's PCIe storage function is backed by it. The guest's /init reads what
the test wrote through the storage node, writes a pattern of its own,
prints what it saw on the serial console and powers off; the test then
reads the guest's pattern back on the storage node.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpustack.drivers.storage.qsd import QsdStorageDriver
from dpustack.lab.guest_initramfs import Initramfs, build_initramfs, init_script
from dpustack.lab.guest_kernel import GuestKernel, guest_kernel
from dpustack.lab.kernel_modules import KernelModules
from qemu_guest import QEMU, boot_guest
from storage_daemons import DpuDaemon, StorageNode, storage_network

MiB = 1 << 20
VOLUME = "vol-guest"
VOLUME_SIZE = 8 * MiB
CHUNK = 64 * 1024
FROM_TEST = (0xA5, 1 * MiB)  # pattern byte, offset: written by the test on the storage node, read by the guest
FROM_GUEST = (0x5A, 3 * MiB)  # written by the guest, read by the test on the storage node
RESULT = re.compile(r"^DPUSTACK-RESULT (.*)$", re.MULTILINE)

# /dev/vda appears once virtio_blk has probed the disk; every dd bypasses the guest's page cache
GUEST_CHECK = f"""
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
if [ -b /dev/vda ]; then
    size=$(cat /sys/block/vda/size)
    read=$(dd if=/dev/vda bs={CHUNK} skip={FROM_TEST[1] // CHUNK} count=1 iflag=direct 2>/dev/null | md5sum)
    dd if=/pattern of=/dev/vda bs={CHUNK} seek={FROM_GUEST[1] // CHUNK} count=1 oflag=direct conv=fsync 2>/dev/null
    echo "DPUSTACK-RESULT sectors=$size read=${{read%% *}} write=$?"
else
    echo "DPUSTACK-RESULT no /dev/vda"
fi
poweroff -f
"""


@pytest.fixture(scope="module")
def kernel() -> GuestKernel:
    return guest_kernel()


@pytest.fixture(scope="module")
def initramfs(kernel: GuestKernel, tmp_path_factory: pytest.TempPathFactory) -> Initramfs:
    return build_initramfs(tmp_path_factory.mktemp("guest") / "initramfs.gz", init_script(GUEST_CHECK),
                           modules=KernelModules(kernel.modules_dir), load=["virtio_pci", "virtio_blk"],
                           files={"pattern": bytes([FROM_GUEST[0]]) * CHUNK})


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[StorageNode, QsdStorageDriver]]:
    """The storage node serving VOLUME, and the DPU's driver (its daemon running)."""
    with storage_network() as (storage_netns, dpu_netns, address):
        workdir = Path(tempfile.mkdtemp(prefix="qsd-guest-", dir="/tmp"))  # short: unix socket paths
        node = StorageNode(storage_netns, address, workdir, {VOLUME: VOLUME_SIZE})
        dpu = DpuDaemon(dpu_netns, workdir)
        driver = QsdStorageDriver(qmp_socket=dpu.qmp_socket, socket_dir=workdir / "fn", timeout=5)
        try:
            node.daemon.start()
            dpu.start()
            yield node, driver
        finally:
            driver.close()
            dpu.kill()
            node.daemon.kill()
            shutil.rmtree(workdir)


def test_a_guest_reads_and_writes_the_volume_through_the_storage_functions_socket(served, kernel, initramfs,
                                                                                 tmp_path):
    assert Path(QEMU).exists(), f"{QEMU} is missing (apt-get install qemu-system-x86)"
    storage, driver = served
    storage.write(VOLUME, FROM_TEST[0], FROM_TEST[1], CHUNK)
    driver.attach("storage-guest", VOLUME, storage.uri(VOLUME))

    run = boot_guest(kernel.boot_image, initramfs.path, workdir=tmp_path,
                     vhost_user_blk=[driver.socket_path("storage-guest")])

    results = RESULT.findall(run.console)
    assert results, f"the guest printed no result (exit {run.returncode}); console:\n{run.console[-3000:]}"
    assert run.returncode == 0  # powered off, not crashed
    expected = hashlib.md5(bytes([FROM_TEST[0]]) * CHUNK).hexdigest()
    assert results[-1] == f"sectors={VOLUME_SIZE // 512} read={expected} write=0"
    assert storage.holds(VOLUME, FROM_GUEST[0], FROM_GUEST[1], CHUNK)
    assert storage.holds(VOLUME, FROM_TEST[0], FROM_TEST[1], CHUNK)  # the guest's write landed elsewhere
