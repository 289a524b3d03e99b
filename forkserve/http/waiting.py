"""Time a request spends waiting on its client is not time spent in the app.

While a worker blocks on a client inside a request — for body bytes, or for room in the socket
buffer to send the response — its scoreboard slot says CLIENT instead of BUSY, so the master's
timeout (meant for an app that hangs) never fires on a slow client: those waits are bounded by
the worker's own header/body timeouts and end in a 408 or a closed connection. When the wait
ends, the request's start time moves forward by the wait, so BUSY time counts only app time.
"""

from __future__ import annotations

import time
from typing import Protocol


class SlotLike(Protocol):
    """The worker's scoreboard slot, as the request path writes it."""

    def begin(self, started: float, request_line: bytes) -> None:
        """A request starts (counted as begun): the slot shows it busy."""

    def busy(self, started: float, request_line: bytes) -> None:
        """Back in the app after a client wait, the start moved forward by the wait."""

    def client_wait(self) -> None:
        """Blocked on the client within a request."""

    def idle(self, now: float, started: float, status: int, sent: int, queue_time: float) -> None:
        """A request ended: count it; the slot shows idle."""


class ClientWaits:
    """One per worker (one request at a time): ``begin``/``end`` around each blocking wait."""

    __slots__ = ("app_start", "line", "since", "slot")

    def __init__(self, slot: SlotLike) -> None:
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
