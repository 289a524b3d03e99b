"""Time a request spends waiting on its client is not time spent in the app.

While a worker blocks on a client inside a request — for body bytes, or for room in the socket
buffer to send the response — its scoreboard slot says CLIENT instead of BUSY, so the master's
timeout (meant for an app that hangs) never fires on a slow client: those waits are bounded by
the worker's own header/body timeouts and end in a 408 or a closed connection. When the wait
ends, the request's start time moves forward by the wait, so BUSY time counts only app time.
"""

from __future__ import annotations

import time

from forkserve.http.protocols import Slot


class ClientWaits:
    """One per worker (one request at a time): ``begin``/``end`` around each blocking wait."""

    __slots__ = ("app_start", "line", "since", "slot")

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        self.app_start = 0.0
        self.line = b""
        self.since = 0.0

    def start_request(self, started: float, line: bytes) -> None:
        self.app_start = started
        self.line = line

    def begin(self) -> None:
        self.since = time.monotonic()
        self.slot.client_wait()

    def end(self) -> None:
        self.app_start += time.monotonic() - self.since
        self.slot.busy(self.app_start, self.line)
