"""How `node show` and `server show` print NUMA: a node's host cells with what is free, a server's placement."""

from __future__ import annotations

from typing import Any, Iterable


def cpu_list(cpus: Iterable[int]) -> str:
    """CPU ids as ranges, the way Linux and libvirt write them: [0, 1, 2, 5] -> '0-2,5'."""
    ids = sorted(set(cpus))
    runs: list[list[int]] = []
    for cpu in ids:
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in runs) or "none"


def _cell_line(cell: dict[str, Any]) -> str:
    free = cell.get("free") or {}
    dedicated = cell.get("dedicated_cpus")
    split = f" (dedicated {cpu_list(dedicated)})" if dedicated is not None else ""
    line = (f"cell {cell['id']}: CPUs {cpu_list(cell.get('cpus', []))}{split}, {free.get('cpus', 0)} free "
            f"(pinnable {cpu_list(free.get('pinnable_cpus', []))}); {cell.get('memory_mib', 0)} MiB, "
            f"{free.get('memory_mib', 0)} free")
    pages = {p["size_kib"]: p["total"] for p in cell.get("hugepages") or []}
    free_pages = {p["size_kib"]: p["free"] for p in free.get("hugepages") or []}
    for size, total in sorted(pages.items()):
        line += f"; {size} KiB pages {free_pages.get(size, 0)}/{total} free"
    return line


def cells_text(node: dict[str, Any]) -> str | None:
    """One line per host cell of a node (None for a node that reports none)."""
    return "\n".join(_cell_line(cell) for cell in node.get("numa_cells") or []) or None


def _part_line(part: dict[str, Any], pinned: bool, pages: int | None) -> str:
    where = f"guest cell {part['guest_cell']} on host cell {part['host_cell']}: "
    if pinned:
        cpus = ", ".join(f"vCPU {v} on CPU {c}" for v, c in zip(part["vcpus"], part["host_cpus"])) + " (pinned)"
    else:
        cpus = f"vCPUs {cpu_list(part['vcpus'])} on CPUs {cpu_list(part['host_cpus'])} (shared)"
    return where + cpus + f"; {part['memory_mib']} MiB" + (f" in {pages} KiB pages" if pages else "")


def placement_text(server: dict[str, Any]) -> str | None:
    """One line per guest cell of a server's NUMA placement: its host cell and CPUs (None: no placement)."""
    placement = server.get("numa_placement")
    if not placement:
        return None
    return "\n".join(_part_line(part, placement.get("pinned", False), placement.get("page_size_kib"))
                     for part in placement.get("cells") or [])
