"""Recycling limits: requests (with jitter), resident memory, lifetime (with jitter).

The request and lifetime limits are hard: a worker takes no new request past either. Its
replacement is asked for ahead of the limit (:func:`request_notice`, :func:`lifetime_notice`), so
it has normally booted, and the master has stopped the old worker, before the limit is reached.

Each worker draws its own random jitter, so workers started together do not all retire together.
Memory is read from ``/proc/self/statm`` with one ``pread`` on a descriptor opened once per worker,
cheap enough to run after every request (and only configured workers pay it).
"""

from __future__ import annotations

import os
import random
import sys

NO_LIMIT = sys.maxsize
MB = 1024 * 1024
NOTICE_REQUESTS = 10  # ask for a replacement at least this many requests before the limit
NOTICE_SECONDS = 10.0  # ... or this long before the end of the lifetime


def request_limit(max_requests: int, jitter: int, rng: random.Random | None = None) -> int:
    """This worker's request budget: max_requests plus a random 0..jitter; NO_LIMIT when off."""
    if max_requests <= 0:
        return NO_LIMIT
    return max_requests + (rng or random.SystemRandom()).randint(0, max(0, jitter))


def request_notice(limit: int) -> int:
    """After how many requests a worker with this budget asks for its replacement.

    The replacement must boot before the budget runs out, or capacity dips when the worker stops
    at its limit (a Django app can take seconds to import). So the notice comes a tenth of the
    budget, and at least NOTICE_REQUESTS requests, before the limit — whichever is earlier —
    but never before half the budget, so a small limit does not replace workers after a request.
    """
    if limit >= NO_LIMIT:
        return NO_LIMIT
    ahead = max(-(-limit // 10), NOTICE_REQUESTS)
    return max(limit - ahead, -(-limit // 2), 1)


def lifetime_notice(lifetime: float) -> float:
    """After how many seconds a worker with this lifetime gets its replacement: a tenth of the
    lifetime, and at least NOTICE_SECONDS, before it ends — never before half of it."""
    if lifetime == float("inf"):
        return lifetime
    return max(lifetime - max(lifetime / 10, NOTICE_SECONDS), lifetime / 2)


def lifetime_limit(lifetime: float, jitter: float, rng: random.Random | None = None) -> float:
    """This worker's lifetime in seconds: lifetime plus a random 0..jitter; inf when off."""
    if lifetime <= 0:
        return float("inf")
    return lifetime + (rng or random.SystemRandom()).uniform(0, max(0.0, jitter))


class RssProbe:
    """This process's resident set size, read cheaply. Open it in the process it measures."""

    def __init__(self, path: str = "/proc/self/statm") -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.page_size = os.sysconf("SC_PAGE_SIZE")

    def rss_bytes(self) -> int:
        """Resident bytes now: statm's second field (pages) times the page size."""
        fields = os.pread(self.fd, 128, 0).split(None, 2)
        return int(fields[1]) * self.page_size

    def close(self) -> None:
        os.close(self.fd)
