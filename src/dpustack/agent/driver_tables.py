"""agent.toml's driver option tables, checked against the options each implementation declares.

``[<interface>.<name>]`` holds the options of implementation ``<name>``
(:attr:`dpustack.drivers.base.Driver.options`); the tables an interface shares
between implementations (``[bmc.host]``, the discovery fields of ``[pci]``)
are checked by the interface's models. Every table present is checked, the
chosen implementation's also when absent, so a typo fails at start even in the
table of an implementation not chosen yet; the chosen one is checked first. Errors name the field:
``switch.ovs.timeout``, ``functions.lab`` (a required table missing),
``switch.ofs`` (no such implementation).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel

from dpustack.drivers.base import Driver
from dpustack.drivers.options import parse_options
from dpustack.drivers.registry import INTERFACES, find_driver
from dpustack.errors import DriverError, InvalidInput


class DriverChoice(NamedTuple):
    """The implementation chosen for one interface and the keyword options it is made with."""

    name: str
    options: dict[str, Any]


class DriverTables:
    """The driver tables of one validated agent.toml (``sections``: the config model), with the
    implementations ``chosen`` for the interfaces in use."""

    def __init__(self, sections: BaseModel, chosen: Mapping[str, str], *, state_dir: Path):
        self._sections = sections
        self._chosen = chosen
        self._state_dir = state_dir

    def choices(self) -> dict[str, DriverChoice]:
        """Check every driver table; the chosen implementation of each interface in use, with its options."""
        choices: dict[str, DriverChoice] = {}
        for interface, driver in INTERFACES.items():
            for path, model in driver.shared_tables.items():
                shared = self._table(path)
                if shared is not None:
                    parse_options(model, shared, where=path, state_dir=self._state_dir)
            tables = self._implementation_tables(interface)
            chosen = self._chosen.get(interface)
            if chosen is not None:
                choices[interface] = DriverChoice(chosen, self._options(interface, chosen, tables.get(chosen),
                                                                        found_as=f"drivers.{interface}"))
            for name, table in tables.items():
                if name != chosen:
                    self._options(interface, name, table, found_as=f"{interface}.{name}")
        return choices

    def _options(self, interface: str, name: str, table: dict[str, Any] | None, *, found_as: str) -> dict[str, Any]:
        """The options of implementation ``name``: its shared tables', then its own table's."""
        driver = INTERFACES[interface]
        try:
            implementation: type[Driver] = find_driver(driver, name)
        except DriverError as exc:
            raise InvalidInput(f"{found_as}: {exc.message}", field=found_as) from exc
        required_by = f'[drivers] {interface} = "{name}"'
        options: dict[str, Any] = {}
        for path in implementation.shared_options:
            options |= parse_options(driver.shared_tables[path], self._table(path), where=path,
                                     state_dir=self._state_dir, required_by=required_by)
        return options | parse_options(implementation.options, table, where=f"{interface}.{name}",
                                       state_dir=self._state_dir, required_by=required_by)

    def _implementation_tables(self, interface: str) -> dict[str, dict[str, Any]]:
        """The ``[<interface>.<name>]`` tables, the interface's shared ones left out."""
        tables = self._table(interface) or {}
        shared = INTERFACES[interface].shared_tables
        return {name: table for name, table in tables.items() if f"{interface}.{name}" not in shared}

    def _table(self, path: str) -> dict[str, Any] | None:
        """The table at a dotted path; in a config section, the fields the section does not declare."""
        value: Any = self._sections
        for part in path.split("."):
            if isinstance(value, BaseModel):
                value = getattr(value, part) if part in type(value).model_fields else (value.model_extra or {}).get(part)
            else:
                value = value.get(part)
            if value is None:
                return None
        return (value.model_extra or {}) if isinstance(value, BaseModel) else value
