"""The lab host image's user space: busybox init running shell scripts that do what cloud-init does.

    files, scripts = guest_files(), guest_scripts()     # for build_initramfs(files=..., scripts=...)
    for step in step_lines(console_text): ...           # {"step": "boot", "disk": "/dev/vda", ...}

The scripts are files of this package, put into the initramfs under
``/etc/dpustack`` (``/etc/udhcpc/default.script`` for udhcpc's). Busybox
init (``/etc/inittab``), once the kernel's ``/init`` has loaded
:data:`MODULES`, runs ``power-button`` first and nothing else until it has
returned: it opens the ACPI power button's input device and leaves a
watcher reading it, which on a press prints ``poweroff`` and powers off
(a press is never lost to a watcher that does not listen yet). Then, all
at once:

* ``steps`` once: the boot disk (the FAT volume labelled DPUSTACK, mounted
  read-only on ``/boot``, and the PCI address of its controller), the first
  NIC's lease, then ``metadata.sh``: meta_data.json and user_data from
  169.254.169.254, the hostname, root's password, root's SSH keys, the user
  data script; then ``ready`` and a getty on ttyS0;
* ``nics``, respawned: a DHCP client on every NIC there is or is hot-plugged
  later (busybox ``uevent``), and ``nic-gone`` when one is removed;
* ``agent``, respawned: the command channel on ttyS1 (its protocol is in the
  script; :mod:`dpustack.lab.guest_agent` is the other end);
* ``guest-agent``, respawned: Debian's QEMU guest agent (``qemu-ga``, put into
  the image by :mod:`dpustack.lab.host_image`) on the virtio-serial port
  ``org.qemu.guest_agent.0`` when the machine has one (a VM; a bare-metal
  host has none, and nothing starts). What it runs is here too:
  ``/usr/sbin/chpasswd`` (``guest-set-user-password``) and ``/sbin/shutdown``
  (``guest-shutdown``), which Debian's busybox has no applets for;
* ``login`` on ttyS0, respawned: busybox getty once the steps are done.

When the system goes down, by the power button or by a ``poweroff`` or
``reboot`` inside (the guest's own business: a user's, the user data's),
init's shutdown action ``shutdown`` prints ``shutdown`` first.

Each step prints one line on the console: ``dpustack-init: `` and a JSON
object with ``"step"`` (``boot``, ``dhcp``, ``metadata``, ``hostname``,
``password``, ``keys``, ``user-data``, ``nic-gone``, ``ready``, ``guest-agent``,
``poweroff``, ``shutdown``, ``failed`` with ``what`` and ``why``). JSON is read in the guest
by ``json.awk``.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources

#: modules /init loads: disk and NIC drivers, what mounting the FAT boot volume needs (its default
#: codepage 437 and iocharset ascii), the ACPI power button as an input event device, and virtio-serial
#: (virtio_console), the guest agent's channel
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "vfat", "nls_cp437", "nls_ascii", "button", "evdev",
           "virtio_console")
#: /init: the prelude of guest_initramfs.init_script, then busybox init
INIT_BODY = "exec /sbin/init"
STEP_PREFIX = "dpustack-init: "
LABEL = "DPUSTACK"

_SCRIPTS = {  # path in the guest: file of this package (mode 0755)
    "etc/dpustack/power-button": "power-button",
    "etc/dpustack/steps": "steps",
    "etc/dpustack/nics": "nics",
    "etc/dpustack/nic-event": "nic-event",
    "etc/dpustack/agent": "agent",
    "etc/dpustack/login": "login",
    "etc/dpustack/shutdown": "shutdown",
    "etc/dpustack/guest-agent": "guest-agent",
    "etc/udhcpc/default.script": "udhcpc.script",
    "usr/sbin/chpasswd": "chpasswd",
    "sbin/shutdown": "shutdown-command",
}
_FILES = {  # path in the guest: file of this package (mode 0644)
    "etc/inittab": "inittab",
    "etc/dpustack/lib.sh": "lib.sh",
    "etc/dpustack/metadata.sh": "metadata.sh",
    "etc/dpustack/json.awk": "json.awk",
}
_ETC = {  # root alone, locked until the metadata gives a password; busybox wget needs hosts and nsswitch.conf
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/shadow": "root:*:19000:0:99999:7:::\n",
    "etc/group": "root:x:0:\n",
    "etc/hosts": "127.0.0.1 localhost\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
    "etc/securetty": "console\nttyS0\n",
    "etc/issue": "dpustack lab host \\n (\\l)\n\n",
    "etc/profile": "export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root\nPS1='\\h:\\w\\$ '\n",
    "root/.profile": ". /etc/profile\n",
}


def source(name: str) -> str:
    """The text of one of this package's files."""
    return resources.files(__package__).joinpath(name).read_text()


def guest_scripts() -> dict[str, str]:
    """The executable files of the guest, by path."""
    return {path: source(name) for path, name in _SCRIPTS.items()}


def guest_files() -> dict[str, bytes]:
    """The other files of the guest, by path."""
    files = {path: source(name).encode() for path, name in _FILES.items()}
    files.update((path, text.encode()) for path, text in _ETC.items())
    return files


def content_hash() -> str:
    """A digest of everything this package puts into the guest (changes when any of it does)."""
    members = {**guest_files(), **{path: text.encode() for path, text in guest_scripts().items()},
               "init": INIT_BODY.encode(), "modules": " ".join(MODULES).encode()}
    digest = hashlib.sha256()
    for path in sorted(members):
        digest.update(f"{path}\0{len(members[path])}\0".encode() + members[path])
    return digest.hexdigest()


def step_lines(console: str) -> list[dict]:
    """The step objects in a console transcript, in order (lines that are not whole step lines skipped)."""
    steps = []
    for line in console.splitlines():
        _, prefix, rest = line.partition(STEP_PREFIX)
        if not prefix:
            continue
        try:
            step = json.loads(rest.strip())
        except ValueError:
            continue
        if isinstance(step, dict) and "step" in step:
            steps.append(step)
    return steps
