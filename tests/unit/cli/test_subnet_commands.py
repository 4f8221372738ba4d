"""`dpustack subnet …`: what each command sends, and what it prints."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from cli_fake_api import NOW, FakeApi, Invoke


class Subnets:
    """`/v1/subnets` on top of the FakeApi's networks (added here: only these tests need them)."""

    def __init__(self, fake: FakeApi) -> None:
        self.fake = fake
        self.store: dict[str, dict[str, Any]] = {}
        for method, pattern, handler in (("POST", r"/v1/subnets$", self.create),
                                         ("GET", r"/v1/subnets$", self.list),
                                         ("GET", r"/v1/subnets/([^/]+)$", self.show),
                                         ("DELETE", r"/v1/subnets/([^/]+)$", self.delete)):
            fake.routes.append((method, re.compile(pattern), handler))

    def find(self, ref: str) -> dict[str, Any] | None:
        return self.store.get(ref) or next((s for s in self.store.values() if s["name"] == ref), None)

    def create(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        network = self.fake.find("networks", body["network"])
        if network is None:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "no network",
                                                       "field": "network"}})
        prefix = body["cidr"].rsplit(".", 1)[0]
        subnet = {"id": f"sub-{len(self.store) + 1}", "name": body.get("name", ""), "network_id": network["id"],
                  "cidr": body["cidr"], "gateway_ip": body.get("gateway_ip", f"{prefix}.1"),
                  "dns_nameservers": body.get("dns_nameservers", []), "enable_dhcp": body.get("enable_dhcp", True),
                  "created_at": NOW}
        self.store[subnet["id"]] = subnet
        return httpx.Response(201, json=subnet)

    def list(self, request: httpx.Request) -> httpx.Response:
        subnets = list(self.store.values())
        if ref := request.url.params.get("network"):
            network = self.fake.find("networks", ref) or {}
            subnets = [s for s in subnets if s["network_id"] == network.get("id")]
        return httpx.Response(200, json=subnets)

    def show(self, request: httpx.Request, ref: str) -> httpx.Response:
        subnet = self.find(ref)
        if subnet is None:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": f"subnet '{ref}' not found",
                                                       "field": "subnet"}})
        return httpx.Response(200, json=subnet)

    def delete(self, request: httpx.Request, ref: str) -> httpx.Response:
        subnet = self.find(ref)
        if subnet is None:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": f"subnet '{ref}' not found",
                                                       "field": "subnet"}})
        del self.store[subnet["id"]]
        return httpx.Response(204)


@pytest.fixture
def subnets(fake: FakeApi) -> Subnets:
    fake.add("networks", name="net1", subnets=[], project_id="p1")
    fake.add("networks", name="net2", subnets=[], project_id="p1")
    return Subnets(fake)


def test_subnet_create_sends_every_option(dpustack: Invoke, fake: FakeApi, subnets: Subnets) -> None:
    result = dpustack("subnet", "create", "--network", "net1", "--cidr", "10.20.0.0/24", "--name", "apps",
                      "--gateway", "10.20.0.254", "--dns", "8.8.8.8", "--dns", "1.1.1.1", "--no-dhcp", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(fake.requests[-1].content) == {
        "network": "net1", "cidr": "10.20.0.0/24", "name": "apps", "gateway_ip": "10.20.0.254",
        "dns_nameservers": ["8.8.8.8", "1.1.1.1"], "enable_dhcp": False}
    shown = json.loads(result.stdout)
    assert shown["dns_nameservers"] == ["8.8.8.8", "1.1.1.1"] and shown["enable_dhcp"] is False


def test_subnet_create_sends_only_what_is_given(dpustack: Invoke, fake: FakeApi, subnets: Subnets) -> None:
    result = dpustack("subnet", "create", "--network", "net1", "--cidr", "10.20.0.0/24")
    assert result.exit_code == 0, result.output
    assert json.loads(fake.requests[-1].content) == {"network": "net1", "cidr": "10.20.0.0/24"}
    assert "10.20.0.1" in result.stdout and "enable_dhcp" in result.stdout


def test_subnet_list_shows_a_row_per_subnet_and_filters_by_network(dpustack: Invoke, fake: FakeApi,
                                                                   subnets: Subnets) -> None:
    dpustack("subnet", "create", "--network", "net1", "--cidr", "10.20.0.0/24", "--name", "apps",
             "--dns", "8.8.8.8")
    dpustack("subnet", "create", "--network", "net2", "--cidr", "10.30.0.0/24", "--no-dhcp")
    table = dpustack("subnet", "list")
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if "10.20.0.0/24" in line)
    assert "apps" in row and "8.8.8.8" in row and "yes" in row
    assert "10.30.0.0/24" in table.stdout

    only = dpustack("subnet", "list", "--network", "net2", "-f", "json")
    assert dict(fake.requests[-1].url.params) == {"network": "net2"}
    assert [s["cidr"] for s in json.loads(only.stdout)] == ["10.30.0.0/24"]


def test_subnet_show_and_delete_take_a_name_or_id(dpustack: Invoke, fake: FakeApi, subnets: Subnets) -> None:
    dpustack("subnet", "create", "--network", "net1", "--cidr", "10.20.0.0/24", "--name", "apps")
    shown = dpustack("subnet", "show", "apps", "-f", "json")
    assert json.loads(shown.stdout)["cidr"] == "10.20.0.0/24"
    deleted = dpustack("subnet", "delete", "apps")
    assert deleted.exit_code == 0 and "subnet apps deleted" in deleted.stdout
    assert (fake.requests[-1].method, fake.requests[-1].url.path) == ("DELETE", "/v1/subnets/apps")
    missing = dpustack("subnet", "show", "apps")
    assert missing.exit_code == 1 and "subnet 'apps' not found (field: subnet)" in missing.stderr
