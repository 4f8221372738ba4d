"""The web stack stays in the web layers: the exception tree, PCI logic, the drivers and the agent's
reconciler load neither FastAPI nor Starlette (each checked in a fresh interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import dpustack

SOURCE = Path(dpustack.__file__).resolve().parents[1]
WEB_FRAMEWORKS = ("fastapi", "starlette")


def web_modules_loaded_by(*modules: str) -> list[str]:
    """The FastAPI and Starlette modules a fresh interpreter has loaded after importing `modules`."""
    script = (f"import importlib, sys\nfor name in {list(modules)!r}:\n    importlib.import_module(name)\n"
              f"print('\\n'.join(m for m in sys.modules if m.split('.')[0] in {WEB_FRAMEWORKS!r}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(SOURCE), os.environ.get("PYTHONPATH"))))}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def modules_under(package: str) -> list[str]:
    """Every module of a dpustack package, found on disk (not imported here)."""
    files = sorted(SOURCE.joinpath(*package.split(".")).rglob("*.py"))
    return [".".join(file.relative_to(SOURCE).with_suffix("").parts).removesuffix(".__init__") for file in files]


def test_an_ovs_switch_driver_loads_no_web_framework():
    loaded = web_modules_loaded_by("dpustack.drivers.switch.ovs")

    assert "fastapi" not in loaded and "starlette" not in loaded, loaded


@pytest.mark.parametrize("modules", [
    ["dpustack.errors", "dpustack.inputs"],
    modules_under("dpustack.pci"),
    modules_under("dpustack.drivers"),
    ["dpustack.agent.reconciler", "dpustack.agent.service"],
], ids=["errors-and-inputs", "pci", "drivers", "agent-reconciler"])
def test_below_the_web_layers_no_module_loads_a_web_framework(modules):
    assert web_modules_loaded_by(*modules) == []
