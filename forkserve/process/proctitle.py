"""Process titles, so ``ps`` tells the master from the workers and what each is doing.

Titles are refreshed from the outside of the request path: the worker's monitor thread reads the
worker's own scoreboard slot once a second and sets the title only when the text changed, so
serving a request costs nothing extra.
"""

from __future__ import annotations

from setproctitle import setproctitle

from forkserve.process.scoreboard import SlotView, State


def set_title(text: str) -> None:
    """Set the title to ``forkserve: <text>``."""
    setproctitle(f"forkserve: {text}")


def worker_title(name: str, view: SlotView, now: float, threads: list[SlotView] | None = None) -> str:
    """``worker [name] busy GET /path 1.2s`` or ``worker [name] idle 1234 reqs`` (no prefix);
    with app threads ``worker [name] 3/8 busy 1234 reqs``."""
    if threads and view.state in (State.IDLE, State.BUSY):
        busy = sum(thread.state in (State.BUSY, State.CLIENT) for thread in threads)
        served = sum(thread.requests for thread in threads)
        return f"worker [{name}] {busy}/{len(threads)} busy {served} reqs"
    if view.state == State.BUSY:
        elapsed = max(0.0, now - view.request_start)
        return f"worker [{name}] busy {view.request_line} {elapsed:.1f}s"
    if view.state == State.IDLE:
        return f"worker [{name}] idle {view.requests} reqs"
    return f"worker [{name}] {view.state.name.lower()}"


def master_title(name: str, workers: int, draining: bool = False) -> str:
    """``master [name] 4 workers`` (no prefix); ``, draining`` during shutdown_delay."""
    return f"master [{name}] {workers} worker{'s' if workers != 1 else ''}{', draining' if draining else ''}"
