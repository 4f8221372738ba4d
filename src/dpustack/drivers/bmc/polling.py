"""Wait until a BMC reports the power state asked for.

BMCs accept a power request at once but apply it late (a graceful shutdown
waits for the OS; some firmware queues the change for seconds), so every
power action ends by reading the state again until it matches or a bounded
time has passed.
"""

from __future__ import annotations

import time
from typing import Callable

from dpustack.drivers.bmc import PowerState
from dpustack.errors import DriverError

DEFAULT_INTERVAL = 0.5


def wait_for_power(read: Callable[[], PowerState], want: PowerState, *, timeout: float, action: str,
                   interval: float = DEFAULT_INTERVAL) -> None:
    """Call ``read`` until it returns ``want``; raise DriverError naming ``action`` after ``timeout`` s.

    A read that fails while the BMC is busy switching is retried; if the last
    read before the deadline failed, its message is part of the error.
    """
    deadline = time.monotonic() + timeout
    last: str = "unknown"
    while True:
        try:
            state = read()
        except DriverError as exc:
            last = f"unreadable ({exc.message})"
        else:
            if state == want:
                return
            last = state
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DriverError(f"{action}: the host is still {last} after {timeout:g} s, not {want}; "
                              f"the BMC accepted the request but did not carry it out in time")
        time.sleep(min(interval, remaining))
