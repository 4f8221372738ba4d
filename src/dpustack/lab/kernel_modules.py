"""Loadable modules of an unpacked kernel (``lib/modules/<release>``): find them, order them by dependency.

    modules = KernelModules(Path(".../lib/modules/6.1.0-57-cloud-amd64"))
    order = modules.load_order(["virtio_pci", "virtio_blk"])
    # ['virtio_ring', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio', 'virtio_pci', 'virtio_blk']
    modules.object_code("virtio_blk")   # the ELF object insmod takes

A module's dependencies are the ``depends=`` entry of its ``.modinfo`` ELF
section (what ``modinfo`` prints, what depmod writes into modules.dep), so
no modules.dep is needed: a kernel package unpacked with ``dpkg-deb -x`` has
none. A module built into the kernel (``modules.builtin``) needs no loading
and is left out of the order, so one list of names fits kernels that build
different drivers in. Names are compared as the kernel does, ``-`` and ``_``
alike.
Compressed modules (``.ko.xz``, ``.ko.gz``) are decompressed, so busybox's
insmod can load them; ``.ko.zst`` is refused (no zstd in Python's library).
"""

from __future__ import annotations

import gzip
import lzma
import struct
from collections.abc import Iterable
from pathlib import Path

from dpustack.lab.state import LabError

_DECOMPRESS = {".ko": lambda data: data, ".ko.xz": lzma.decompress, ".ko.gz": gzip.decompress}
_SUFFIXES = (*_DECOMPRESS, ".ko.zst")
_ELF64_LE = b"\x7fELF\x02\x01"


def module_name(name: str) -> str:
    """The kernel's spelling of a module name: ``virtio-blk`` and ``virtio_blk`` are one module."""
    return name.replace("-", "_")


class KernelModules:
    """The ``.ko`` files under one kernel's module directory, by module name."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise LabError(f"no kernel module directory at {self.directory}", field="modules_dir")
        self._files: dict[str, Path] = {}
        for path in sorted(self.directory.rglob("*.ko*")):
            suffix = next((s for s in _SUFFIXES if path.name.endswith(s)), None)
            if suffix is not None:
                self._files.setdefault(module_name(path.name[:-len(suffix)]), path)
        builtin = self.directory / "modules.builtin"
        self._builtin = {module_name(Path(line).name.removesuffix(".ko"))
                         for line in (builtin.read_text().split() if builtin.exists() else [])}

    def is_builtin(self, name: str) -> bool:
        return module_name(name) in self._builtin and module_name(name) not in self._files

    def path(self, name: str) -> Path:
        """The file of module ``name``; LabError if this kernel has no such module file."""
        try:
            return self._files[module_name(name)]
        except KeyError:
            kind = "built into the kernel" if self.is_builtin(name) else "not a module of this kernel"
            raise LabError(f"kernel modules in {self.directory} have no file for '{name}' ({kind})",
                           field="modules") from None

    def object_code(self, name: str) -> bytes:
        """The module's ELF object, decompressed."""
        path = self.path(name)
        suffix = next(s for s in _SUFFIXES if path.name.endswith(s))
        if suffix not in _DECOMPRESS:
            raise LabError(f"{path}: {suffix} modules cannot be decompressed here (xz, gzip or none)",
                           field="modules")
        data = _DECOMPRESS[suffix](path.read_bytes())
        if not data.startswith(_ELF64_LE):
            raise LabError(f"{path} is not a 64-bit little-endian ELF object", field="modules")
        return data

    def depends(self, name: str) -> list[str]:
        """The modules ``name`` needs loaded before it, as its ``.modinfo`` lists them."""
        for entry in modinfo(self.object_code(name)):
            key, _, value = entry.partition("=")
            if key == "depends":
                return [module_name(dep) for dep in value.split(",") if dep]
        return []

    def load_order(self, names: Iterable[str]) -> list[str]:
        """``names`` and every module they need, each after its dependencies, in the order asked
        where dependencies leave a choice; built-in ones left out."""
        order: list[str] = []
        visiting: list[str] = []

        def visit(name: str) -> None:
            if name in order or self.is_builtin(name):
                return
            if name in visiting:
                raise LabError(f"kernel modules depend on each other in a circle: {' -> '.join(visiting + [name])}",
                               field="modules")
            visiting.append(name)
            for dependency in self.depends(name):
                visit(dependency)
            visiting.pop()
            order.append(name)

        for name in names:
            visit(module_name(name))
        return order


def modinfo(elf: bytes) -> list[str]:
    """The ``key=value`` entries of an ELF64 object's ``.modinfo`` section (empty if it has none)."""
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        name, _, _, _, offset, size = struct.unpack_from("<IIQQQQ", elf, shoff + index * shentsize)
        return name, offset, size

    _, names_at, _ = section(shstrndx)
    for index in range(shnum):
        name, offset, size = section(index)
        if elf[names_at + name:elf.index(b"\0", names_at + name)] == b".modinfo":
            return [entry.decode(errors="replace") for entry in elf[offset:offset + size].split(b"\0") if entry]
    return []
