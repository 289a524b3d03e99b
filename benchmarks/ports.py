"""Free loopback ports for the servers the benchmarks and the tests start.

Asking the kernel for port 0 gives a free port, but only for that moment: when the test suite
runs in parallel processes (pytest-xdist), another process may be handed the same port before
the server that wanted it has bound it — and forkserve binds with SO_REUSEPORT, so two servers
would then share one port without an error, each getting half of the other's clients. So a
process may be given its own range in ``FREE_PORT_RANGE`` (``LOW-HIGH``; the suite's conftest
gives each parallel process a slice below the kernel's ephemeral range, where no client socket
takes its port either); ports are then handed out in turn from that range, each checked free
by binding it, and the same port comes back only after the whole range has been used.
"""

from __future__ import annotations

import itertools
import os
import random
import socket

HOST = "127.0.0.1"
RANGE_ENV = "FREE_PORT_RANGE"
_cursor: tuple[str, itertools.count[int]] | None = None  # (the range it walks, where it is)


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing is bound to right now (from ``FREE_PORT_RANGE``
    when that is set, else the kernel's choice)."""
    span = os.environ.get(RANGE_ENV, "")
    if not span:
        with socket.socket() as probe:
            probe.bind((host, 0))
            return probe.getsockname()[1]
    low, high = (int(part) for part in span.split("-"))
    global _cursor
    if _cursor is None or _cursor[0] != span:
        # A random start: a child process that inherits the range (a benchmark runner started
        # by a test) walks it from elsewhere than its parent.
        _cursor = (span, itertools.count(random.randrange(high - low + 1)))
    size = high - low + 1
    for _ in range(size):
        port = low + next(_cursor[1]) % size
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {RANGE_ENV}={span}")
