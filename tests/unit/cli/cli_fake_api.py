"""An in-memory stand-in for the controller API (docs/api.md), served through httpx.MockTransport.

Long actions create operations whose steps advance by one each time the
operation is read, so a `--wait` sees them run one after another.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Callable

import httpx
from typer.testing import Result

NOW = "2025-01-01T00:00:00+00:00"
LATER = "2025-01-01T00:00:01.500000+00:00"
STEPS = {"create": ["schedule", "allocate ports", "build on agent", "bind ports"],
         "delete": ["agent delete", "release"], "add_nic": ["allocate port", "agent plug nic"],
         "force_delete": ["release_without_node"], "set_port_qos": ["set_limits", "apply_on_node"],
         "create_volume": ["write_data", "mark_available"], "extend_volume": ["extend"],
         "flatten_volume": ["flatten"], "create_snapshot": ["take_snapshot", "mark_available"],
         "delete_snapshot": ["delete_data", "remove_record"], "delete_image": ["flatten_volumes", "delete_image"],
         "set_password": ["set_password"]}
VOLUME_ACTIONS = ("create_volume", "extend_volume", "flatten_volume", "create_snapshot", "delete_snapshot",
                  "delete_image")
FORCE_WARNING = "node dpu-bm-1 was not called: what it holds for this instance was not removed there"
DEFAULT_STEPS = ["agent call"]
Handler = Callable[..., httpx.Response]
Invoke = Callable[..., Result]  # the `dpustack` fixture: run the CLI with arguments


def _json(status: int, body: Any = None) -> httpx.Response:
    return httpx.Response(status) if body is None else httpx.Response(status, json=body)


def _error(status: int, code: str, message: str, field: str | None = None) -> httpx.Response:
    error = {"code": code, "message": message, **({"field": field} if field else {})}
    return _json(status, {"error": error})


class FakeApi:
    """Routes requests to small handlers over dicts of objects keyed by kind and id."""

    def __init__(self) -> None:
        self.store: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in (
            "flavors", "images", "networks", "ports", "volumes", "instances", "operations", "nodes",
            "projects", "tokens", "pci_devices", "pci_pools", "pci_flavors", "security_groups", "snapshots")}
        self.pci_flavor_attrs = ["vendor_id", "product_id", "extra_info"]  # what `_flavor_attrs` lists
        self.requests: list[httpx.Request] = []
        self.uploads: dict[str, bytes] = {}
        self.admin_passwords: dict[str, str] = {}  # instance id -> the admin password it was last given
        self.fail_step: tuple[str, str] | None = None  # (step name, error) that the next operations fail at
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for method, pattern, handler in (
            ("POST", r"/v1/(flavors|networks|volumes|projects)", self.create_simple),
            ("GET", r"/v1/(\w+)", self.list),
            ("GET", r"/v1/(\w+)/([^/]+)", self.show),
            ("DELETE", r"/v1/(flavors|images|networks|ports|volumes|tokens)/([^/]+)", self.delete_simple),
            ("POST", r"/v1/images", self.create_image),
            ("PUT", r"/v1/images/([^/]+)/file", self.upload),
            ("POST", r"/v1/tokens", self.create_token),
            ("POST", r"/v1/instances", self.create_instance),
            ("DELETE", r"/v1/instances/([^/]+)",
             lambda r, ref: self.act(ref, "force_delete" if r.url.params.get("force") == "true" else "delete")),
            ("POST", r"/v1/instances/([^/]+)/(stop|start|reboot|pause|unpause)", lambda r, ref, a: self.act(ref, a)),
            ("POST", r"/v1/instances/([^/]+)/nics", lambda r, ref: self.act(ref, "add_nic", json.loads(r.content))),
            ("DELETE", r"/v1/instances/([^/]+)/nics/([^/]+)", lambda r, ref, p: self.act(ref, "remove_nic", {"port": p})),
            ("POST", r"/v1/instances/([^/]+)/volumes",
             lambda r, ref: self.act(ref, "add_volume", json.loads(r.content))),
            ("DELETE", r"/v1/instances/([^/]+)/volumes/([^/]+)",
             lambda r, ref, v: self.act(ref, "remove_volume", {"volume": v})),
            ("GET", r"/v1/instances/([^/]+)/console", self.console),
            ("POST", r"/v1/instances/([^/]+)/admin-password", self.set_admin_password),
            ("POST", r"/v1/ports", self.create_port),
            ("GET", r"/v1/pci/(devices|pools)", self.list_pci),
            ("GET", r"/v1/pci-flavors", self.list_pci_flavors),
            ("GET", r"/v1/pci-flavors/([^/]+)", self.show_pci_flavor),
            ("POST", r"/v1/pci-flavors", self.create_pci_flavor),
            ("PUT", r"/v1/pci-flavors/([^/]+)", self.update_pci_flavor),
            ("DELETE", r"/v1/pci-flavors/([^/]+)", self.delete_pci_flavor),
            ("PUT", r"/v1/flavors/([^/]+)/extra-specs", self.set_extra_specs),
            ("DELETE", r"/v1/flavors/([^/]+)/extra-specs/([^/]+)", self.unset_extra_spec),
            ("POST", r"/v1/security-groups", self.create_security_group),
            ("GET", r"/v1/security-groups", lambda r: _json(200, list(self.store["security_groups"].values()))),
            ("GET", r"/v1/security-groups/([^/]+)", self.show_security_group),
            ("DELETE", r"/v1/security-groups/([^/]+)", self.delete_security_group),
            ("POST", r"/v1/security-groups/([^/]+)/rules", self.create_rule),
            ("DELETE", r"/v1/security-group-rules/([^/]+)", self.delete_rule),
            ("PUT", r"/v1/ports/([^/]+)", self.update_port),
            ("PUT", r"/v1/ports/([^/]+)/qos", self.set_port_qos),
            ("DELETE", r"/v1/ports/([^/]+)/qos", self.set_port_qos),
            ("POST", r"/v1/volumes", self.create_volume),
            ("POST", r"/v1/volumes/([^/]+)/(extend|flatten)", self.change_volume),
            ("POST", r"/v1/volumes/([^/]+)/snapshots", self.create_snapshot),
            ("GET", r"/v1/volumes/([^/]+)/snapshots", self.volume_snapshots),
            ("DELETE", r"/v1/snapshots/([^/]+)", self.delete_snapshot),
            ("DELETE", r"/v1/images/([^/]+)", self.delete_image),
        ):
            self.routes.append((method, re.compile(pattern + "$"), handler))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for method, pattern, handler in reversed(self.routes):
            match = pattern.match(request.url.path)
            if method == request.method and match:
                return handler(request, *match.groups())
        return _error(404, "not_found", f"no route {request.method} {request.url.path}")

    # -- generic resources -----------------------------------------------
    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        obj = {"id": str(uuid.uuid4()), "created_at": NOW, **fields}
        self.store[kind][obj["id"]] = obj
        return obj

    def find(self, kind: str, ref: str) -> dict[str, Any] | None:
        return self.store[kind].get(ref) or next(
            (o for o in self.store[kind].values() if o.get("name") == ref or o.get("hostname") == ref), None)

    def create_simple(self, request: httpx.Request, kind: str) -> httpx.Response:
        body = json.loads(request.content)
        if kind == "networks":
            subnet = body.pop("subnet", None)
            body["subnets"] = [{"id": str(uuid.uuid4()), "cidr": subnet, "gateway_ip": "10.10.0.1"}] if subnet else []
        return _json(201, self.add(kind, **body))

    def list(self, request: httpx.Request, kind: str) -> httpx.Response:
        if kind not in self.store:
            return _error(404, "not_found", f"no route {request.url.path}")
        items = list(self.store[kind].values())
        if kind == "ports" and (server := request.url.params.get("instance")):
            instance = self.find("instances", server) or {}
            items = [p for p in items if p["instance_id"] == instance.get("id")]
        if kind == "operations" and (server := request.url.params.get("instance")):
            instance = self.find("instances", server) or {}
            items = [o for o in items if o["instance_id"] == instance.get("id")]
        return _json(200, items)

    def show(self, request: httpx.Request, kind: str, ref: str) -> httpx.Response:
        obj = self.find(kind, ref) if kind in self.store else None
        if obj is None:
            singular = {"instances": "instance"}.get(kind, kind.rstrip("s"))
            return _error(404, "not_found", f"{singular} '{ref}' not found", singular)
        if kind == "operations":
            self.advance(obj)
        return _json(200, obj)

    def delete_simple(self, request: httpx.Request, kind: str, ref: str) -> httpx.Response:
        obj = self.find(kind, ref)
        if obj is None:
            return _error(404, "not_found", f"{ref} not found")
        del self.store[kind][obj["id"]]
        return _json(204)

    def create_image(self, request: httpx.Request) -> httpx.Response:
        body = {"disk_format": "raw", **json.loads(request.content)}
        return _json(201, self.add("images", status="queued", size=0, virtual_size=0, checksum="",
                                   project_id="p1", **body))

    def upload(self, request: httpx.Request, ref: str) -> httpx.Response:
        image = self.find("images", ref)
        assert image is not None
        content = request.read()
        if not content:  # as the controller refuses it
            return _error(400, "invalid_input", f"the upload for image '{image['name']}' is empty: an image "
                                                "needs data", "file")
        self.uploads[image["id"]] = content
        image.update(status="active", size=len(content), virtual_size=len(content), checksum="c0ffee")
        return _json(200, image)

    def create_token(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        token = self.add("tokens", project_id=body["project"], role=body["role"], name=body.get("name", ""))
        return _json(201, {**token, "token": "secret-token"})

    def console(self, request: httpx.Request, ref: str) -> httpx.Response:
        return _json(200, {"type": "serial", "url": f"ws://bmc.example/{ref}"})

    def set_admin_password(self, request: httpx.Request, ref: str) -> httpx.Response:
        """As the controller: 204 for a bare-metal host (the password is kept for its next boot), 202 with the
        `set_password` operation for a VM (a node named `dpu-vm-*`), 409 for a VM not ACTIVE."""
        instance = self.find("instances", ref)
        if instance is None:
            return _error(404, "not_found", f"instance '{ref}' not found", "instance")
        password = json.loads(request.content).get("new_password")
        if not password or len(password) > 255:
            return _error(400, "invalid_input", "new_password: give 1-255 characters", "new_password")
        if not instance.get("node", "").startswith("dpu-vm-"):
            self.admin_passwords[instance["id"]] = password
            return _json(204)
        if instance["status"] != "ACTIVE":
            return _error(409, "conflict", f"instance '{instance['name']}' is {instance['status']}: a VM's password "
                                           "is set in its running guest, so it must be ACTIVE", "instance")
        self.admin_passwords[instance["id"]] = password
        return self.start_operation(instance, "set_password", {"user": "root"})

    def create_port(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        network = self.find("networks", body["network"])
        if network is None:
            return _error(404, "not_found", f"network '{body['network']}' not found", "network")
        groups = self.group_ids(body.get("security_groups") or ["default"])
        if isinstance(groups, httpx.Response):
            return groups
        return _json(201, self.add("ports", name=body.get("name", ""), network_id=network["id"], instance_id=None,
                                   mac_address=body.get("mac") or "fa:16:3e:00:00:02", status="DOWN",
                                   fixed_ips=[], vnic_type=body.get("vnic_type", "normal"), binding_host_id="",
                                   binding_profile={}, requested_chassis="", project_id="p1",
                                   security_groups=groups))

    def update_port(self, request: httpx.Request, ref: str) -> httpx.Response:
        port = self.find("ports", ref)
        if port is None:
            return _error(404, "not_found", f"port '{ref}' not found", "port")
        groups = self.group_ids(json.loads(request.content)["security_groups"])
        if isinstance(groups, httpx.Response):
            return groups
        port["security_groups"] = groups
        return _json(200, port)

    def set_port_qos(self, request: httpx.Request, ref: str) -> httpx.Response:
        """An operation that gives the port the limits of a PUT's body (a DELETE: none) once it succeeds."""
        port = self.find("ports", ref)
        if port is None:
            return _error(404, "not_found", f"port '{ref}' not found", "port")
        body = json.loads(request.content) if request.method == "PUT" else {}
        return self.start_operation(None, "set_port_qos",
                                    {"port_id": port["id"], "bps": body.get("bps"), "pps": body.get("pps")})

    # -- volumes and snapshots: changes are operations, as in the controller ----------
    def create_volume(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if self.find("volumes", body["name"]) is not None:
            return _error(409, "conflict", f"a volume named '{body['name']}' already exists", "name")
        snapshot = self.find("snapshots", body["snapshot"]) if body.get("snapshot") else None
        if body.get("snapshot") and snapshot is None:
            return _error(404, "not_found", f"snapshot '{body['snapshot']}' not found", "snapshot")
        if "size" not in body and snapshot is None:
            return _error(400, "invalid_input", "give the size (GiB) of an empty volume", "size")
        volume = self.add("volumes", name=body["name"], size=body.get("size") or snapshot["size"], status="creating",
                          fault=None, image_id=body.get("image"), snapshot_id=snapshot["id"] if snapshot else None,
                          instance_id=None, attachments=[], bootable=bool(body.get("image")), project_id="p1")
        op = self.operation(None, "create_volume", {"volume_id": volume["id"]})
        volume["operation_id"] = op["id"]
        return _json(202, volume)

    def change_volume(self, request: httpx.Request, ref: str, change: str) -> httpx.Response:
        volume = self.find("volumes", ref)
        if volume is None:
            return _error(404, "not_found", f"volume '{ref}' not found", "volume")
        body = json.loads(request.content) if request.content else {}
        if change == "extend" and body["size"] <= volume["size"]:
            return _error(400, "invalid_input", f"volume '{volume['name']}' already has {volume['size']} GiB: "
                                                "give a larger size", "size")
        return _json(202, self.operation(None, f"{change}_volume", {"volume_id": volume["id"], **body}))

    def create_snapshot(self, request: httpx.Request, ref: str) -> httpx.Response:
        volume = self.find("volumes", ref)
        if volume is None:
            return _error(404, "not_found", f"volume '{ref}' not found", "volume")
        attached = (volume.get("attachments") or [{}])[0]
        snapshot = self.add("snapshots", name=json.loads(request.content)["name"], volume_id=volume["id"],
                            size=volume["size"], status="creating", fault=None, project_id="p1",
                            instance_id=volume.get("instance_id"), node=attached.get("node"))
        snapshot["operation_id"] = self.operation(None, "create_snapshot", {"snapshot_id": snapshot["id"]})["id"]
        return _json(202, snapshot)

    def volume_snapshots(self, request: httpx.Request, ref: str) -> httpx.Response:
        volume = self.find("volumes", ref)
        if volume is None:
            return _error(404, "not_found", f"volume '{ref}' not found", "volume")
        return _json(200, [s for s in self.store["snapshots"].values() if s["volume_id"] == volume["id"]])

    def delete_snapshot(self, request: httpx.Request, ref: str) -> httpx.Response:
        snapshot = self.find("snapshots", ref)
        if snapshot is None:
            return _error(404, "not_found", f"snapshot '{ref}' not found", "snapshot")
        users = [v["name"] for v in self.store["volumes"].values() if v.get("snapshot_id") == snapshot["id"]]
        if users:
            return _error(409, "conflict", f"snapshot '{snapshot['name']}' is shared by volumes made from it "
                                           f"({', '.join(users)}); flatten or delete them first", "snapshot")
        snapshot["status"] = "deleting"
        return _json(202, self.operation(None, "delete_snapshot", {"snapshot_id": snapshot["id"]}))

    def delete_image(self, request: httpx.Request, ref: str) -> httpx.Response:
        """Gone at once (204), or, while volumes share it, the operation flattening them first (202)."""
        image = self.find("images", ref)
        if image is None:
            return _error(404, "not_found", f"image '{ref}' not found", "image")
        sharing = [v["id"] for v in self.store["volumes"].values() if v.get("image_id") in (image["id"], image["name"])]
        if not sharing:
            del self.store["images"][image["id"]]
            return _json(204)
        image["status"] = "deleting"
        return _json(202, self.operation(None, "delete_image", {"image_id": image["id"], "volume_ids": sharing}))

    def apply_to_volume(self, action: str, args: dict[str, Any]) -> None:
        if action == "create_volume":
            self.store["volumes"][args["volume_id"]].update(status="available", operation_id=None)
        elif action == "extend_volume":
            self.store["volumes"][args["volume_id"]]["size"] = args["size"]
        elif action == "flatten_volume":
            self.store["volumes"][args["volume_id"]].update(image_id=None, snapshot_id=None)
        elif action == "create_snapshot":
            self.store["snapshots"][args["snapshot_id"]].update(status="available", operation_id=None)
        elif action == "delete_snapshot":
            del self.store["snapshots"][args["snapshot_id"]]
        elif action == "delete_image":
            for volume_id in args["volume_ids"]:
                self.store["volumes"][volume_id]["image_id"] = None
            del self.store["images"][args["image_id"]]

    # -- security groups -------------------------------------------------------
    def rule(self, group_id: str, **fields: Any) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "security_group_id": group_id, "ethertype": "IPv4", "protocol": None,
                "port_range_min": None, "port_range_max": None, "remote_ip_prefix": None,
                "remote_group_id": None, "created_at": NOW, **fields}

    def group(self, ref: str) -> dict[str, Any] | None:
        if ref == "default" and self.find("security_groups", ref) is None:
            group = self.add("security_groups", name="default", description="Default security group",
                             project_id="p1")
            group["rules"] = [self.rule(group["id"], direction="egress"),
                              self.rule(group["id"], direction="ingress", remote_group_id=group["id"])]
        return self.find("security_groups", ref)

    def group_ids(self, refs: list[str]) -> list[str] | httpx.Response:
        ids = []
        for index, ref in enumerate(refs):
            group = self.group(ref)
            if group is None:
                return _error(404, "not_found", f"security group '{ref}' not found", f"security_groups.{index}")
            ids.append(group["id"])
        return ids

    def create_security_group(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if self.find("security_groups", body["name"]) is not None:
            return _error(409, "conflict", f"a security group named '{body['name']}' already exists", "name")
        group = self.add("security_groups", name=body["name"], description=body.get("description", ""),
                         project_id="p1")
        group["rules"] = [self.rule(group["id"], direction="egress")]
        return _json(201, group)

    def show_security_group(self, request: httpx.Request, ref: str) -> httpx.Response:
        group = self.group(ref)
        if group is None:
            return _error(404, "not_found", f"security group '{ref}' not found", "security_group")
        return _json(200, group)

    def delete_security_group(self, request: httpx.Request, ref: str) -> httpx.Response:
        group = self.group(ref)
        if group is None:
            return _error(404, "not_found", f"security group '{ref}' not found", "security_group")
        if group["name"] == "default":
            return _error(409, "conflict", "the default security group cannot be deleted", "security_group")
        user = next((p for p in self.store["ports"].values() if group["id"] in p.get("security_groups", [])), None)
        if user is not None:
            return _error(409, "conflict", f"security group '{group['name']}' is used by port {user['id']}",
                          "security_group")
        del self.store["security_groups"][group["id"]]
        return _json(204)

    def create_rule(self, request: httpx.Request, ref: str) -> httpx.Response:
        group = self.group(ref)
        if group is None:
            return _error(404, "not_found", f"security group '{ref}' not found", "security_group")
        body = json.loads(request.content)
        if body.get("port_range_min") is not None and body.get("protocol") not in ("tcp", "udp"):
            return _error(400, "invalid_input", "ports can only be given with protocol tcp or udp",
                          "port_range_min")
        remote_group = body.pop("remote_group", None)
        if remote_group is not None:
            found = self.group(remote_group)
            if found is None:
                return _error(404, "not_found", f"security group '{remote_group}' not found", "remote_group")
            body["remote_group_id"] = found["id"]
        rule = self.rule(group["id"], **body)
        group["rules"].append(rule)
        return _json(201, rule)

    def delete_rule(self, request: httpx.Request, rule_id: str) -> httpx.Response:
        for group in self.store["security_groups"].values():
            for rule in group["rules"]:
                if rule["id"] == rule_id:
                    group["rules"].remove(rule)
                    return _json(204)
        return _error(404, "not_found", f"security group rule '{rule_id}' not found", "security_group_rule")

    # -- PCI devices, pools and PCI flavors --------------------------------
    def list_pci(self, request: httpx.Request, kind: str) -> httpx.Response:
        items = list(self.store[f"pci_{kind}"].values())
        if node := request.url.params.get("node"):
            items = [i for i in items if i["node"] == node]
        return _json(200, items)

    def attrs_entry(self) -> dict[str, Any]:
        return {"id": "0", "name": "_flavor_attrs", "description": "",
                "spec": {attr: "True" for attr in self.pci_flavor_attrs}}

    def find_pci_flavor(self, ref: str) -> dict[str, Any] | None:
        return self.attrs_entry() if ref in ("0", "_flavor_attrs") else self.find("pci_flavors", ref)

    def list_pci_flavors(self, request: httpx.Request) -> httpx.Response:
        flavors = sorted(self.store["pci_flavors"].values(), key=lambda f: f["name"])
        return _json(200, [self.attrs_entry(), *flavors])

    def show_pci_flavor(self, request: httpx.Request, ref: str) -> httpx.Response:
        flavor = self.find_pci_flavor(ref)
        if flavor is None:
            return _error(404, "not_found", f"PCI flavor '{ref}' not found", "pci_flavor")
        return _json(200, flavor)

    def create_pci_flavor(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if self.find("pci_flavors", body["name"]) is not None:
            return _error(409, "conflict", f"a PCI flavor named '{body['name']}' already exists", "name")
        flavor = {"id": str(uuid.uuid4()), "name": body["name"], "description": body.get("description", ""),
                  "spec": {}}
        self.store["pci_flavors"][flavor["id"]] = flavor
        return _json(201, flavor)

    def update_pci_flavor(self, request: httpx.Request, ref: str) -> httpx.Response:
        body = json.loads(request.content)
        flavor = self.find("pci_flavors", ref)
        if flavor is None:
            return _error(404, "not_found", f"PCI flavor '{ref}' not found", "pci_flavor")
        if body.get("action") != "update":
            return _error(400, "invalid_input", "action must be 'update'", "action")
        changes = dict(body["pci-flavor"])
        if "description" in changes:
            flavor["description"] = changes.pop("description")
        for key in changes:
            if key not in self.pci_flavor_attrs and not key.startswith("e."):
                return _error(400, "invalid_input", f"'{key}' is not one of the nodes' pci_flavor_attrs",
                              f"pci-flavor.{key}")
        if changes:
            flavor["spec"] = changes
        return _json(200, flavor)

    def delete_pci_flavor(self, request: httpx.Request, ref: str) -> httpx.Response:
        flavor = self.find("pci_flavors", ref)
        if flavor is None:
            return _error(404, "not_found", f"PCI flavor '{ref}' not found", "pci_flavor")
        for owner in self.store["flavors"].values():
            if flavor["name"] in owner.get("extra_specs", {}).get("pci_passthrough:pci_flavor", ""):
                return _error(409, "conflict", f"PCI flavor '{flavor['name']}' is used by flavor '{owner['name']}'",
                              "pci_flavor")
        del self.store["pci_flavors"][flavor["id"]]
        return _json(204)

    def set_extra_specs(self, request: httpx.Request, ref: str) -> httpx.Response:
        flavor = self.find("flavors", ref)
        if flavor is None:
            return _error(404, "not_found", f"flavor '{ref}' not found", "flavor")
        flavor.setdefault("extra_specs", {}).update(json.loads(request.content))
        return _json(200, flavor)

    def unset_extra_spec(self, request: httpx.Request, ref: str, key: str) -> httpx.Response:
        flavor = self.find("flavors", ref)
        if flavor is None or key not in flavor.get("extra_specs", {}):
            return _error(404, "not_found", f"flavor '{ref}' has no extra spec '{key}'", "key")
        del flavor["extra_specs"][key]
        return _json(200, flavor)

    # -- instances and operations ----------------------------------------
    def create_instance(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if self.find("flavors", body["flavor"]) is None:
            return _error(404, "not_found", f"flavor '{body['flavor']}' not found", "flavor")
        instance = self.add("instances", name=body["name"], status="BUILDING", task_state="building", node=None,
                            node_id=None, fault=None, ports=[], volumes=[], flavor_id=body["flavor"],
                            image_id=body.get("image"), project_id="p1", updated_at=NOW)
        return self.start_operation(instance, "create", {"node": body.get("node")})

    def act(self, ref: str, action: str, args: dict[str, Any] | None = None) -> httpx.Response:
        instance = self.find("instances", ref)
        if instance is None:
            return _error(404, "not_found", f"instance '{ref}' not found", "instance")
        return self.start_operation(instance, action, args or {})

    def start_operation(self, instance: dict[str, Any] | None, action: str, args: dict[str, Any]) -> httpx.Response:
        """An operation on `instance` (None: on no instance, as a port's QoS change), answered 202."""
        return _json(202, self.operation(instance, action, args))

    def operation(self, instance: dict[str, Any] | None, action: str, args: dict[str, Any]) -> dict[str, Any]:
        steps = [{"index": i, "name": n, "status": "pending", "started_at": None, "finished_at": None,
                  "error": None, "detail": {}} for i, n in enumerate(STEPS.get(action, DEFAULT_STEPS))]
        return self.add("operations", project_id="p1", instance_id=instance["id"] if instance else None,
                        action=action, status="pending", error=None, started_at=None, finished_at=None, steps=steps,
                        args=args)

    def advance(self, op: dict[str, Any]) -> None:
        """One step further: finish the running step, start the next; apply the effect at the end."""
        if op["status"] in ("succeeded", "failed"):
            return
        op.update(status="running", started_at=op["started_at"] or NOW)
        running = next((s for s in op["steps"] if s["status"] == "running"), None)
        if running is not None:
            if self.fail_step and running["name"] == self.fail_step[0]:
                return self.fail(op, running, self.fail_step[1])
            detail: dict[str, Any] = {"substeps": [{"name": "power_on", "status": "done", "duration_ms": 12,
                                                    "error": None}]}
            if op["action"] == "force_delete":  # the controller's record that the node was not cleaned
                detail = {"node": "dpu-bm-1", "node_cleaned": False, "warning": FORCE_WARNING}
            running.update(status="done", finished_at=LATER, detail=detail)
        pending = next((s for s in op["steps"] if s["status"] == "pending"), None)
        if pending is not None:
            pending.update(status="running", started_at=NOW)
            return
        op.update(status="succeeded", finished_at=LATER)
        self.apply(op)

    def fail(self, op: dict[str, Any], step: dict[str, Any], error: str) -> None:
        step.update(status="failed", finished_at=LATER, error=error)
        op.update(status="failed", finished_at=LATER, error=error)
        if op["action"] == "create_volume":
            fault = {"message": error, "step": step["name"], "operation_id": op["id"]}
            self.store["volumes"][op["args"]["volume_id"]].update(status="error", operation_id=None, fault=fault)
        if op["instance_id"] is None or op["action"] == "set_password":
            return  # a port's QoS change, a volume's, a VM's password: its fault is the operation's error
        instance = self.store["instances"][op["instance_id"]]
        instance.update(status="ERROR", fault={"message": error, "step": step["name"], "operation_id": op["id"]})

    def apply(self, op: dict[str, Any]) -> None:
        action, args = op["action"], op["args"]
        if action == "set_port_qos":
            self.store["ports"][args["port_id"]]["qos"] = {"bps": args["bps"], "pps": args["pps"]}
            return
        if action in VOLUME_ACTIONS:
            self.apply_to_volume(action, args)
            return
        instance = self.store["instances"][op["instance_id"]]
        if action in ("delete", "force_delete"):
            del self.store["instances"][instance["id"]]
        elif action == "create":
            instance.update(status="ACTIVE", node=args.get("node") or "dpu-bm-1")
        elif action in ("stop", "start", "reboot", "unpause"):
            instance["status"] = "SHUTOFF" if action == "stop" else "ACTIVE"
        elif action == "pause":
            instance["status"] = "PAUSED"
        elif action == "add_nic":
            port = self.add("ports", name="", network_id=args.get("network"), instance_id=instance["id"],
                            mac_address="fa:16:3e:00:00:01", status="ACTIVE",
                            fixed_ips=[{"subnet_id": "s1", "ip_address": "10.10.0.5"}])
            instance["ports"].append(port["id"])
        elif action == "remove_nic":
            instance["ports"].remove(args["port"])
        elif action == "add_volume":
            instance["volumes"].append(args["volume"])
        elif action == "remove_volume":
            instance["volumes"].remove(args["volume"])
