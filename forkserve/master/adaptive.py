"""The adaptive worker count: grow from ``workers`` to ``max_workers`` under queueing, shrink back
when quiet (uWSGI's "cheaper" idea, for a preforking server).

Once a second the master measures the fleet (:class:`~forkserve.master.load.Load`) and the
requests begun since the last look that waited longer than ``scale_up_queue_time`` (from the
scoreboard's queue-time histogram, so the threshold is rounded up to one of its bucket bounds:
0.001 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30 s).

- **Grow by one** when every worker is busy (every app thread in a request) and requests queue:
  some waited past the threshold since the last look, or requests have been waiting (in a
  worker's loop or the listen queue) for at least the threshold. Then wait for the new worker to
  be ready before deciding again. Not past ``max_workers``, nor when the cgroup's memory has no
  room for another worker of the current average size or its CPU quota is used up
  (:class:`~forkserve.process.budget.Budget`; logged once per episode).
- **Shrink by one** after ``scale_down_after`` seconds during which at least one worker was idle
  at every look and nothing queued; never below ``workers``. The worker stopped is an idle one
  (oldest first), gracefully: it finishes what it holds.

Every change is logged with its reason, counted (``forkserve_worker_scaling_total``), and shown
in /stats (``adaptive``) and ``forkserve top``. HUP, USR2 and WINCH pause the decisions while
they run; TTIN/TTOU and ``forkserve ctl workers N`` still set the count by hand (the adaptive
count moves on from there).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any

from forkserve.master.load import Load
from forkserve.process.budget import Budget
from forkserve.process.logs import error_log
from forkserve.process.scoreboard import DURATION_BUCKETS
from forkserve.stats.metrics import rss_bytes

Arbiter = Any  # forkserve.master.arbiter.Arbiter, which imports this module

DEFAULT_WORKER_RSS = 64 * 2**20  # assumed size of a worker when none can be measured


class Adaptive:
    """Decides the worker count between ``workers`` and ``max_workers``; off when max_workers is 0."""

    def __init__(self, arbiter: Arbiter, budget: Budget | None = None) -> None:
        self.arbiter = arbiter
        self.config: Any = None
        self.budget = budget
        self.enabled = False
        self.floor = self.ceiling = 0
        self.threshold_bucket = 0
        self.late_seen = -1  # requests over the threshold counted so far (-1: not read yet)
        self.queued_since: float | None = None
        self.quiet_since: float | None = None
        self.refused: str | None = None
        self.changes = {"up": 0, "down": 0}

    def configure(self, config: Any) -> None:
        """Take the limits of the current settings (at start and after a HUP)."""
        self.config = config
        self.enabled = config.max_workers > 0
        self.floor = config.workers
        self.ceiling = max(config.max_workers, config.workers)
        # Requests in the buckets above the threshold's bucket waited longer than its bound.
        self.threshold_bucket = bisect_left(DURATION_BUCKETS, config.scale_up_queue_time)
        if self.enabled and self.budget is None:
            self.budget = Budget()
        self._publish(None)

    @property
    def bound(self) -> float:
        """The queue time the histogram can tell apart: the threshold rounded up to a bucket bound."""
        index = self.threshold_bucket
        return DURATION_BUCKETS[index] if index < len(DURATION_BUCKETS) else float("inf")

    def _late(self) -> int:
        """Requests begun since the last call that waited longer than the threshold."""
        scoreboard = self.arbiter.scoreboard
        if scoreboard is None:
            return 0
        total = sum(scoreboard.totals().queue_buckets[self.threshold_bucket + 1:])
        late, self.late_seen = (total - self.late_seen if self.late_seen >= 0 else 0), total
        return max(0, late)

    def decide(self, load: Load, now: float) -> None:
        """One look (once a second): grow, shrink or keep the fleet."""
        if not self.enabled:
            return
        late = self._late()
        arbiter = self.arbiter
        if arbiter.paused or arbiter.stopping is not None or arbiter.reload.state is not None \
                or arbiter.upgrade.in_progress:
            self.queued_since = self.quiet_since = None
            return
        queued = load.waiting + load.listen_queue > 0
        self.queued_since = (self.queued_since or now) if queued else None
        pressure = load.all_busy and (late > 0 or (queued and now - (self.queued_since or now) >= self.config.scale_up_queue_time))
        quiet = load.idle > 0 and not queued and late == 0
        self.quiet_since = (self.quiet_since or now) if quiet else None
        target = arbiter.target_workers
        if pressure:
            if target < self.ceiling and self._all_ready():
                self._grow(target, load, late)
        elif self.quiet_since is not None and now - self.quiet_since >= self.config.scale_down_after \
                and target > self.floor:
            self.quiet_since = now
            self._change(target, target - 1, "down",
                         f"at least one worker idle and nothing queued for {self.config.scale_down_after:g}s")
            arbiter.fleet.retire_extra(target - 1)
        if not pressure:
            self.refused = None

    def _all_ready(self) -> bool:
        """The last change has taken effect: every serving worker has booted."""
        serving = self.arbiter.fleet.serving()
        return len(serving) >= self.arbiter.target_workers and all(record.ready_at is not None for record in serving)

    def _grow(self, target: int, load: Load, late: int) -> None:
        assert self.budget is not None
        sizes = [size for record in self.arbiter.fleet.serving() if (size := rss_bytes(record.pid))]
        refusal = self.budget.refusal(sum(sizes) // len(sizes) if sizes else DEFAULT_WORKER_RSS)
        if refusal is not None:
            if refusal != self.refused:
                error_log.warning("adaptive: not growing past %d workers: %s", target, refusal)
            self.refused = refusal
            self._publish(f"held at {target}: {refusal}")
            return
        waited = (f"{late} request(s) waited over {self.bound:g}s in the last second" if late else
                  f"{load.waiting + load.listen_queue} request(s) queued for "
                  f"{self.config.scale_up_queue_time:g}s or more")
        self._change(target, target + 1, "up", f"every worker busy and {waited}")

    def _change(self, old: int, new: int, direction: str, reason: str) -> None:
        self.changes[direction] += 1
        error_log.info("adaptive: %d -> %d workers (%s): %s", old, new, direction, reason)
        self.arbiter.set_target(new)
        self._publish(f"{old} -> {new}: {reason}")

    def _publish(self, last: str | None) -> None:
        """What /stats, /metrics and top show (``telemetry.scaling``; None when off)."""
        telemetry = self.arbiter.telemetry
        if not self.enabled:
            telemetry.scaling = None
            return
        previous = telemetry.scaling or {}
        telemetry.scaling = {
            "min_workers": self.floor,
            "max_workers": self.ceiling,
            "scale_up_queue_time": self.config.scale_up_queue_time,
            "scale_down_after": self.config.scale_down_after,
            "changes": dict(self.changes),
            "last_change": last if last is not None else previous.get("last_change"),
            "last_change_at": round(time.time(), 3) if last is not None else previous.get("last_change_at"),
        }
