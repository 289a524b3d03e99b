"""Shrinking a failing case to a small reproducer, replaying it against the server.

A long run generates without hypothesis' shrinking (shrinking each failure as it comes would stall
the run on the first one and cannot be counted per class), so it keeps the smallest failing case
of each class and shrinks it afterwards, alone on the server: first the simplest way to send it,
then delta debugging on the bytes (drop halves, quarters, ... single bytes) while the case still
fails with the same class. Replaying alone also settles a class that a server-wide oracle (worker
pids, the log) may have pinned on the wrong case while several clients ran at once: a reproducer
that no longer fails is reported as such.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from .strategies import Case, Chunking


class Budget:
    """Replays left for one shrink: a count and a deadline, whichever runs out first."""

    def __init__(self, attempts: int, seconds: float) -> None:
        self.attempts = attempts
        self.deadline = time.monotonic() + seconds

    def spend(self) -> bool:
        self.attempts -= 1
        return self.attempts >= 0 and time.monotonic() < self.deadline


def shrink(case: Case, fails: Callable[[Case], bool], budget: Budget) -> Case:
    """A smaller case for which ``fails`` still holds (``case`` itself if nothing smaller does)."""
    for simpler in (replace(case, chunking=Chunking(), hold=False), replace(case, hold=False)):
        if simpler != case and budget.spend() and fails(simpler):
            case = simpler
            break
    data = case.data
    size = max(len(data) // 2, 1)
    while True:
        start = 0
        while start < len(data):
            candidate = data[:start] + data[start + size:]
            if not budget.spend():
                return replace(case, data=data)
            if fails(replace(case, data=candidate)):
                data = candidate
            else:
                start += size
        if size == 1:
            return replace(case, data=data)
        size //= 2
