"""What a booting instance does over its NIC, run inside a lab host namespace: fetch its metadata.

The request is made by this interpreter started with ``ip netns exec``, so it
leaves from the host's own addresses and routes, as cloud-init's would.
"""

from __future__ import annotations

import base64
import json
import sys
from dataclasses import dataclass

from dpustack import metadata_port
from dpustack.linux import netns

_FETCH = """
import base64, http.client, json, sys
url_host, path, timeout, source = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
try:
    connection = http.client.HTTPConnection(url_host, timeout=timeout,
                                            source_address=(source, 0) if source else None)
    connection.request("GET", path)
    answer = connection.getresponse()
    status, body = answer.status, answer.read()
except OSError as error:
    status, body = 0, str(error).encode()
print(json.dumps({"status": status, "body": base64.b64encode(body).decode()}))
"""


@dataclass(frozen=True)
class Fetched:
    """The answer; ``status`` 0 when there was none (``body`` then says why)."""

    status: int
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def fetch_metadata(namespace: str, path: str = "openstack/latest/meta_data.json", *,
                   timeout: float = 5.0, source: str = "") -> Fetched:
    """GET http://169.254.169.254/<path> from inside ``namespace`` (from address ``source`` if given)."""
    argv = [sys.executable, "-c", _FETCH, metadata_port.METADATA_IP, "/" + path.lstrip("/"), str(timeout), source]
    done = netns.run(namespace, argv, timeout=timeout + 10)
    answer = json.loads(done.stdout)
    return Fetched(status=answer["status"], body=base64.b64decode(answer["body"]))
