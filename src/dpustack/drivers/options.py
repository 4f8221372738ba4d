"""Driver options: each implementation declares the agent.toml table it reads as a pydantic model.

An implementation registered as ``<name>`` under ``dpustack.drivers.<interface>``
reads ``[<interface>.<name>]``; its class attribute ``options`` is the model of
that table, whose fields are the constructor's keyword arguments. Tables
several implementations share (``[bmc.host]``) are declared by the interface
(``shared_tables``) and taken by the implementations that name them
(``shared_options``). A bad value fails with the dotted name of its field
(``switch.ovs.timeout``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo

from dpustack.errors import InvalidInput


class DriverOptions(BaseModel):
    """The options of one driver implementation (none by default); unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


def _under_state_dir(path: Path, info: ValidationInfo) -> Path:
    state_dir = (info.context or {}).get("state_dir")
    return path if path.is_absolute() or state_dir is None else Path(state_dir) / path


#: a path that, when relative, is under the agent's ``state_dir``
StatePath = Annotated[Path, AfterValidator(_under_state_dir)]


def parse_options(model: type[DriverOptions], table: dict[str, Any] | None, *, where: str,
                  state_dir: Path | None = None, required_by: str = "") -> dict[str, Any]:
    """Validate the table at ``where`` (``switch.ovs``; ``None``: absent) and return its options as
    keyword arguments (fields left at ``None`` omitted, so the constructor's defaults apply).

    Raises InvalidInput naming the field (``switch.ovs.timeout``), or the table itself when it is
    absent but has required fields (``required_by`` says who needs it, e.g. ``[drivers] functions = "lab"``).
    """
    try:
        options = model.model_validate(table or {}, context={"state_dir": state_dir})
    except ValidationError as exc:
        first = exc.errors()[0]
        if table is None and first["type"] == "missing":
            raise InvalidInput(f"{where}: required when {required_by}", field=where) from exc
        field = ".".join((where, *(str(part) for part in first["loc"])))
        raise InvalidInput(f"{field}: {first['msg']}", field=field) from exc
    return options.model_dump(exclude_none=True)
