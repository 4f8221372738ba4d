"""The host's BMC: power, hardware and console; its address and credentials stay inside the agent."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from dpustack.agent.routes.deps import ServiceDep
from dpustack.agent.schemas import HardwareInfoOut, PowerOut
from dpustack.contract.instances import Console
from dpustack.web.http_errors import error_responses

router = APIRouter(prefix="/v1/bmc", tags=["bmc"], responses=error_responses(502))


@router.post("/power_on", response_model=PowerOut)
def power_on(service: ServiceDep) -> dict[str, Any]:
    return {"power_state": service.power_host("on")}


@router.post("/power_off", response_model=PowerOut)
def power_off(service: ServiceDep) -> dict[str, Any]:
    return {"power_state": service.power_host("off")}


@router.get("/power", response_model=PowerOut)
def power(service: ServiceDep) -> dict[str, Any]:
    return {"power_state": service.drivers.bmc.power_state()}


@router.get("/hw_info", response_model=HardwareInfoOut)
def hw_info(service: ServiceDep) -> dict[str, Any]:
    return asdict(service.drivers.bmc.hw_info())


@router.get("/console", response_model=Console)
def console(service: ServiceDep) -> dict[str, Any]:
    return asdict(service.drivers.bmc.console())
