"""Switch ports made directly: plug and unplug them, limit a cloud port's packet rate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from dpustack.agent.routes.deps import IdPath, ServiceDep
from dpustack.agent.schemas import SwitchPortCreate, SwitchPortOut
from dpustack.contract.switch import SwitchPortQos, SwitchPortQosOut
from dpustack.web.http_errors import error_responses

router = APIRouter(prefix="/v1/switch", tags=["switch"], responses=error_responses(502))


@router.post("/ports", response_model=SwitchPortOut, status_code=201, responses=error_responses(404))
def add_port(body: SwitchPortCreate, service: ServiceDep) -> dict[str, Any]:
    return service.devices.add_port(body)


@router.get("/ports", response_model=list[SwitchPortOut])
def list_ports(service: ServiceDep, bridge: str | None = None) -> list[dict[str, Any]]:
    return service.devices.ports(bridge)


@router.put("/ports/{port_id}/qos", response_model=SwitchPortQosOut)
def set_port_qos(port_id: Annotated[str, IdPath], body: SwitchPortQos, service: ServiceDep) -> dict[str, Any]:
    """The packet-rate limit of the switch port carrying cloud port ``port_id`` (404: not plugged here)."""
    return service.devices.set_port_qos(port_id, body)


@router.delete("/bridges/{bridge}/ports/{port_name}", status_code=204)
def delete_port(bridge: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,15}$")],
                port_name: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")],
                service: ServiceDep) -> Response:
    service.devices.delete_port(bridge, port_name)
    return Response(status_code=204)
