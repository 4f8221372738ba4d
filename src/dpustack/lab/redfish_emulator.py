"""sushy-tools' Redfish emulator, run so that it outlives a restart of the libvirtd it serves.

    python -m dpustack.lab.redfish_emulator --config emulator.conf    # sushy-emulator's arguments

sushy-tools' libvirt driver keeps every domain it has looked up, and with it the connection it came
from, for the emulator's lifetime (``LibvirtDriver._get_domain`` is memoized): once that libvirtd
restarts, every request about the domain fails with HTTP 500 ("client socket is closed") until the
emulator restarts. Here that lookup is undone to its plain function (sushy-tools' memoize wraps with
``functools.wraps``, which keeps it as ``__wrapped__``), so each request looks the domain up on a new
connection, as the driver does for everything else; then the emulator's own ``main`` runs. Not for
libvirt's test driver: a ``test:///default`` lives only as long as a connection to it, which the
kept domain holds.
"""

from __future__ import annotations

import sys

from sushy_tools.emulator import main as emulator
from sushy_tools.emulator.resources.systems.libvirtdriver import LibvirtDriver


def main() -> int:
    lookup = LibvirtDriver._get_domain
    LibvirtDriver._get_domain = getattr(lookup, "__wrapped__", lookup)
    return emulator.main() or 0


if __name__ == "__main__":
    sys.exit(main())
