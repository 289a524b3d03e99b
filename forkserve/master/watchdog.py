"""Deciding, from the scoreboard, which worker is stuck; and how long to wait before respawning.

Pure decisions with no process handling, so they are unit-tested directly; the fleet acts on
them. Two ways a worker can be stuck:

- *busy* in the app for longer than ``timeout`` (state BUSY, ``request_start`` older than the
  timeout): the app hangs. An idle worker is never killed for being idle.
- *stalled* outside the app: state BOOTING or IDLE and no heartbeat for longer than the longest a
  healthy worker can go without one (waiting ``keepalive`` on an idle connection, then
  ``header_timeout`` reading the next head, plus a lingering close). A deadlock in a hook or in
  the worker itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from forkserve.process.scoreboard import SlotView, State
from forkserve.settings.registry import Config

HEARTBEAT_SLACK = 2.0  # the worker beats once per idle tick (1 s); allow two missed beats
LINGER_ALLOWANCE = 2.0  # a refused request's lingering close (forkserve.http.connection)


@dataclass(frozen=True)
class Overdue:
    """A stuck worker: ``kind`` is 'busy' (in the app) or 'stalled' (no heartbeat)."""

    kind: str
    seconds: float
    request_line: str


def stall_limit(config: Config) -> float:
    """Seconds a BOOTING/IDLE worker may go without a heartbeat before it counts as stalled."""
    healthy_gap = config.keepalive + config.header_timeout + LINGER_ALLOWANCE
    return max(config.timeout, healthy_gap) + HEARTBEAT_SLACK


def overdue(view: SlotView, now: float, timeout: float, stall: float) -> Overdue | None:
    """Whether the worker in this slot snapshot is stuck (``timeout`` 0 disables both checks)."""
    if timeout <= 0:
        return None
    if view.state == State.BUSY and view.request_start > 0:
        running = now - view.request_start
        if running > timeout:
            return Overdue("busy", running, view.request_line)
    elif view.state in (State.BOOTING, State.IDLE) and view.heartbeat > 0:  # (0: a slot mid-reset)
        silent = now - view.heartbeat
        if silent > stall:
            return Overdue("stalled", silent, "")
    return None


def same_episode(first: SlotView, second: SlotView) -> bool:
    """Is a re-read slot still the same worker stuck in the same request? (act only then)"""
    return (
        first.pid == second.pid
        and first.state == second.state
        and first.request_start == second.request_start
        and first.heartbeat == second.heartbeat
    )


class RespawnBackoff:
    """Exponential delay before the next spawn while workers keep dying right after they start.

    A worker that exits on its own within ``instant`` seconds of being forked is a failure; each
    failure in a row doubles the delay (``base``, 2x``base``, ... capped at ``cap``); a worker
    that lived longer resets the streak.
    """

    def __init__(self, base: float = 0.25, cap: float = 30.0, instant: float = 2.0) -> None:
        self.base = base
        self.cap = cap
        self.instant = instant
        self.failures = 0
        self.not_before = 0.0

    def worker_exited(self, lived: float, now: float) -> float:
        """Note an unexpected exit after ``lived`` seconds; return the delay now imposed (0: none)."""
        if lived >= self.instant:
            self.failures = 0
            self.not_before = 0.0
            return 0.0
        self.failures += 1
        delay = min(self.base * 2 ** (self.failures - 1), self.cap)
        self.not_before = now + delay
        return delay

    def wait_left(self, now: float) -> float:
        """Seconds until spawning is allowed again (0 when it is)."""
        return max(0.0, self.not_before - now)
