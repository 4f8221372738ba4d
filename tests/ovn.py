"""A private OVN central for tests: northbound and southbound ovsdb-servers and ovn-northd.

The implementation is the lab's (:class:`dpustack.lab.dataplane.OvnCentral`): `start()`, always
`stop()`; `nb`/`sb` are the connection strings, `nbctl()`/`sbctl()` run the CLIs against them.
"""

from __future__ import annotations

from dpustack.lab.dataplane import OvnCentral

__all__ = ["OvnCentral"]
