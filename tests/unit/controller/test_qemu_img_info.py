"""`qemu-img info --output=json` answers, recorded from qemu-img 7.2, read into ImageInfo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpustack.controller.storage.qemu_img import ImageInfo, QemuImgError

FIXTURES = Path(__file__).parent / "fixtures" / "qemu_img"


def _recorded(name: str) -> ImageInfo:
    return ImageInfo.from_json(json.loads((FIXTURES / f"{name}.json").read_text()))


def test_a_raw_file_is_raw_with_its_size_in_sectors() -> None:
    assert _recorded("raw") == ImageInfo(format="raw", virtual_size=512, backing_file=None, data_file=None)


def test_a_qcow2_overlay_names_its_backing_file() -> None:
    info = _recorded("overlay")
    assert info.format == "qcow2" and info.backing_file == "base.qcow2" and info.data_file is None


def test_a_qcow2_with_an_external_data_file_names_it() -> None:
    info = _recorded("external")
    assert info.format == "qcow2" and info.data_file == "data.raw" and info.backing_file is None
    assert info.virtual_size == 1 << 20


def test_an_answer_without_a_format_is_an_error() -> None:
    with pytest.raises(QemuImgError, match="format"):
        ImageInfo.from_json({"virtual-size": 512})
