"""Which volume backend the controller runs with, and the settings the qcow2 one cannot do without."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dpustack.controller.settings import Settings
from dpustack.controller.volumebackend import FileVolumeBackend, Qcow2VolumeBackend, volume_backend


def test_files_is_the_default_backend(tmp_path):
    assert isinstance(volume_backend(Settings(home=tmp_path)), FileVolumeBackend)


def test_qcow2_drives_the_storage_daemon_named_by_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("DPUSTACK_HOME", str(tmp_path))
    monkeypatch.setenv("DPUSTACK_VOLUME_BACKEND", "qcow2")
    monkeypatch.setenv("DPUSTACK_STORAGE_QMP", str(tmp_path / "qsd.sock"))
    monkeypatch.setenv("DPUSTACK_STORAGE_NBD", "[fd00::5]:10809")
    backend = volume_backend(Settings.from_env())
    assert isinstance(backend, Qcow2VolumeBackend)
    assert backend.node.qmp_socket == tmp_path / "qsd.sock"
    assert backend.node.uri("a1") == "nbd://[fd00::5]:10809/a1"
    assert (tmp_path / "pool" / "volumes").is_dir()
    backend.node.close()


@pytest.mark.parametrize(("values", "named"), [
    ({"volume_backend": "qcow2", "storage_nbd": "127.0.0.1:10809"}, "DPUSTACK_STORAGE_QMP"),
    ({"volume_backend": "qcow2", "storage_qmp": "/run/qsd.sock"}, "DPUSTACK_STORAGE_NBD"),
    ({"volume_backend": "qcow2", "storage_qmp": "/run/qsd.sock", "storage_nbd": "10809"}, "DPUSTACK_STORAGE_NBD"),
    ({"volume_backend": "ceph"}, "DPUSTACK_VOLUME_BACKEND"),
    ({"storage_reconcile_interval": 0}, "DPUSTACK_STORAGE_RECONCILE_INTERVAL"),
])
def test_missing_or_malformed_storage_settings_name_the_variable(tmp_path, values, named):
    with pytest.raises(ValidationError) as caught:
        Settings(home=tmp_path, **values)
    assert named in caught.value.errors()[0]["msg"]


def test_the_storage_reconcile_runs_every_30_s_unless_told(tmp_path, monkeypatch):
    assert Settings(home=tmp_path).storage_reconcile_interval == 30.0
    monkeypatch.setenv("DPUSTACK_STORAGE_RECONCILE_INTERVAL", "2.5")
    assert Settings.from_env().storage_reconcile_interval == 2.5
