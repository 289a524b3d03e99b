"""How loaded the fleet is right now, from the scoreboard and the listen queues.

Read once a second by the master for StatsD's gauges and the adaptive worker count. A worker is
*busy* when everything that runs the app in it is: its one slot with ``threads = 1``, every one
of its app threads' slots otherwise (a worker with a free thread can still take a request). It
is *idle* when nothing in it is in the app. Requests *waiting* are complete requests a worker's
loop holds for the app (its connections in the "app" state beyond those in a thread).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from forkserve.process.scoreboard import Scoreboard, SlotView, State
from forkserve.process.sockets import Listener
from forkserve.stats.backlog import queue_depth

_IN_APP = (State.BUSY, State.CLIENT)


@dataclass(frozen=True)
class Load:
    """One look at the serving workers."""

    workers: int = 0  # serving workers that have booted
    busy: int = 0  # workers with every app thread in a request
    idle: int = 0  # workers with no request in the app
    waiting: int = 0  # complete requests held by the workers' loops, waiting for a thread
    queue_worst: float = 0.0  # the worst queue time of requests begun in the last 5-10 s
    listen_queue: int = 0  # connections waiting in the listening sockets' accept queues

    @property
    def all_busy(self) -> bool:
        return self.workers > 0 and self.busy == self.workers


def measure(scoreboard: Scoreboard, slots: Iterable[tuple[int, list[int]]], listeners: list[Listener]) -> Load:
    """The load of the workers given as (slot, thread slots) pairs, and of the listen queues."""
    now = time.time()
    workers = busy = idle = waiting = 0
    worst = 0.0
    for slot, thread_slots in slots:
        view = scoreboard.read(slot)
        if view.state in (State.EMPTY, State.BOOTING, State.STOPPING):
            continue
        runners = [scoreboard.read(index) for index in thread_slots] or [view]
        in_app = sum(_in_app(runner) for runner in runners)
        workers += 1
        busy += in_app == len(runners)
        idle += in_app == 0
        if thread_slots or in_app:
            # Connections "in the app" or ready for it, beyond those in the app. (A sync worker
            # publishes its counts as a request enters the app and twice a second: once it is
            # idle again, a count from its last request may linger; what it holds ready it runs
            # at once anyway, so an idle sync worker has nothing waiting.)
            waiting += max(0, view.connections[2] - in_app)
        worst = max(worst, *(scoreboard.queue_peak(index, now) for index in [slot, *thread_slots]))
    depth = 0
    for listener in listeners:
        queue = queue_depth(listener.sock)
        depth += queue.waiting if queue is not None else 0
    return Load(workers, busy, idle, waiting, worst, depth)


def _in_app(view: SlotView) -> bool:
    return view.state in _IN_APP
