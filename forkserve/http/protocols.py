"""What the HTTP layer needs from the process side, as small ``typing.Protocol``\\s.

The HTTP layer imports nothing from ``forkserve.process`` or above. Where a request must report
or ask something of the process it runs in, it depends on one of these shapes, and the process
side's objects fit them without knowing it: ``forkserve.process.scoreboard.SlotWriter`` is a
:class:`Slot`, ``forkserve.process.sockets.Listener`` a :class:`ListenerFacts`. A test (or the
in-process benchmark) may pass anything of the same shape.
"""

from __future__ import annotations

from typing import Protocol


class Slot(Protocol):
    """The worker's scoreboard slot, as the requests it serves report to it."""

    def begin(self, started: float, request_line: bytes) -> None:
        """A request starts (counted against the recycling budget): in the app from ``started``."""

    def busy(self, started: float, request_line: bytes) -> None:
        """Back in the app after a client wait, the start moved forward by the wait."""

    def client_wait(self) -> None:
        """Within the request, waiting on the client (not time in the app) until busy() again."""

    def idle(self, now: float, started: float, status: int, sent: int, queue_time: float = 0.0) -> None:
        """The request ended: count it (and how long it waited for the app) and show the slot idle."""


class ListenerFacts(Protocol):
    """What the environ needs to know about the listening socket a connection came in on."""

    server_name: str
    server_port: str
