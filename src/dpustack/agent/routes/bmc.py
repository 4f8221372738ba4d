"""Seed 000 BMC calls; the BMC's address and credentials stay inside the agent."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from dpustack.agent.routes.deps import RuntimeDep
from dpustack.agent.schemas import HardwareInfoOut, PowerOut
from dpustack.contract.instances import Console
from dpustack.web.http_errors import error_responses

router = APIRouter(prefix="/v1/bmc", tags=["bmc"], responses=error_responses(502))


@router.post("/power_on", response_model=PowerOut)
def power_on(runtime: RuntimeDep) -> dict[str, Any]:
    return {"power_state": runtime.compute.power_host("on")}


@router.post("/power_off", response_model=PowerOut)
def power_off(runtime: RuntimeDep) -> dict[str, Any]:
    return {"power_state": runtime.compute.power_host("off")}


@router.get("/power", response_model=PowerOut)
def power(runtime: RuntimeDep) -> dict[str, Any]:
    return {"power_state": runtime.drivers.bmc.power_state()}


@router.get("/hw_info", response_model=HardwareInfoOut)
def hw_info(runtime: RuntimeDep) -> dict[str, Any]:
    return asdict(runtime.drivers.bmc.hw_info())


@router.get("/console", response_model=Console)
def console(runtime: RuntimeDep) -> dict[str, Any]:
    return asdict(runtime.drivers.bmc.console())
