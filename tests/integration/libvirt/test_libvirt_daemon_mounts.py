"""The private libvirtd's mount script on a machine that lacks the directories it mounts over.

Debian's libvirt-daemon package alone ships no /etc/libvirt; the lab's daemon bind-mounts its own files over
such paths, so a missing mount point must be made rather than fail the daemon's start.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dpustack.lab import libvirt_daemon


def test_a_missing_directory_mount_point_is_made_and_mounted(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "lab-etc-libvirt"
    source.mkdir()
    (source / "libvirtd.conf").write_text("listen_tls = 0\n")
    target = tmp_path / "machine" / "etc" / "libvirt"  # not on this "machine"
    monkeypatch.setattr(libvirt_daemon, "LIBVIRTD", f"cat {target}/libvirtd.conf; true")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           libvirt_daemon._script([(source, str(target))])],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "listen_tls = 0" in done.stdout  # the daemon would see the lab's file at the mount point
    assert target.is_dir() and not (target / "libvirtd.conf").exists()  # outside the namespace: empty
