"""What the master knows about the server, as Prometheus text and as JSON.

Everything is read from the scoreboard (per-worker state and request counters), the listening
sockets (queue depth) and /proc (memory), plus the few facts only the master has, kept in
:class:`Telemetry`: when it started, why workers were restarted, whether it is draining, when its
loop last turned. A snapshot is taken per request to the stats endpoint — nothing is computed
when nobody asks.

For whoever supervises workers in the master: call ``arbiter.telemetry.record_restart(reason)``
when a worker is being replaced (reason: one of RESTART_REASONS, or a description that starts
with the setting behind it), ``arbiter.telemetry.worker_spawned(slot)`` when a worker is forked,
and set ``arbiter.telemetry.draining = True`` when the master stops taking traffic but keeps
serving (shutdown_delay): /readyz then fails.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from forkserve import __version__
from forkserve.process.scoreboard import (
    CONNECTION_STATES,
    DURATION_BUCKETS,
    Counters,
    Scoreboard,
    SlotView,
    State,
)
from forkserve.process.sockets import Listener, describe
from forkserve.stats.backlog import QueueDepth, queue_depth

RESTART_REASONS = ("max_requests", "memory", "lifetime", "timeout", "crash")
LIVENESS_STALE = 10.0  # seconds without a master loop turn before /healthz says the master is stuck
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_SHOWN_STATES = (State.BOOTING, State.IDLE, State.BUSY, State.STOPPING)


class Telemetry:
    """The master's own facts for the stats endpoint. Lives in the master; cheap to update."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.restarts: dict[str, int] = dict.fromkeys(RESTART_REASONS, 0)
        self.last_restart_by_slot: dict[int, str | None] = {}
        self.draining = False
        self.last_tick = time.monotonic()
        self.fully_booted = False
        self.scaling: dict[str, Any] | None = None  # the adaptive worker count (max_workers), when on
        self.app_metrics: Any = None  # forkserve.stats.appmetrics.AppMetrics, when the app's are served
        self._unclaimed: deque[str] = deque(maxlen=64)  # reasons whose replacement is not forked yet

    def record_restart(self, reason: str) -> None:
        """Count a worker being replaced. ``reason`` is one of RESTART_REASONS or a description
        starting with one of the settings behind them ("max_requests (500 served)",
        "max_worker_memory (300 MB)", "max_worker_lifetime, 3600s old"); the worker forked next
        shows the description in /stats as its ``last_restart_reason``."""
        key = restart_reason_key(reason)
        self.restarts[key] = self.restarts.get(key, 0) + 1
        self._unclaimed.append(reason)

    def worker_spawned(self, slot: int) -> None:
        """A worker was forked into ``slot``: it replaces the oldest unclaimed restart, if any."""
        self.last_restart_by_slot[slot] = self._unclaimed.popleft() if self._unclaimed else None

    def tick(self) -> None:
        """The master loop turned (for /healthz)."""
        self.last_tick = time.monotonic()


_REASON_PREFIXES = (
    ("max_requests", "max_requests"),
    ("max_worker_memory", "memory"),
    ("memory", "memory"),
    ("max_worker_lifetime", "lifetime"),
    ("lifetime", "lifetime"),
    ("timeout", "timeout"),
    ("crash", "crash"),
)


def restart_reason_key(reason: str) -> str:
    """The metric label for a restart reason or its description (unknown ones keep their first word)."""
    text = reason.strip().lower()
    for prefix, key in _REASON_PREFIXES:
        if text.startswith(prefix):
            return key
    return text.split(" ", 1)[0].strip(",:;()") or "unknown"


def unasked_exit_reason(status: int) -> str:
    """Why a worker the master did not stop has exited, from its wait status: a clean exit is
    the worker recycling itself (max_requests); anything else is a crash."""
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return "max_requests"
    return "crash"


class Master(Protocol):
    """What a snapshot reads from the master (the Arbiter)."""

    pid: int
    target_workers: int
    stopping: str | None
    listeners: list[Listener]
    telemetry: Telemetry

    @property
    def scoreboard(self) -> Scoreboard | None:
        """The shared scoreboard (None before the master has made it)."""


@dataclass(frozen=True)
class ThreadStats:
    """One app thread of a worker (threads > 1)."""

    number: int
    state: str
    requests: int
    current_request: str | None
    request_age: float | None


@dataclass(frozen=True)
class WorkerStats:
    slot: int
    pid: int
    state: str
    requests: int
    current_request: str | None
    request_age: float | None
    rss_bytes: int | None
    age: float
    heartbeat_age: float
    last_restart_reason: str | None
    connections: dict[str, int] = field(default_factory=dict)  # held by its loop, by state
    threads: list[ThreadStats] = field(default_factory=list)  # its app threads (threads > 1)
    queue_worst: float = 0.0  # the worst queue time of its requests begun in the last 5-10 s


@dataclass(frozen=True)
class ListenerStats:
    address: str
    queue: QueueDepth | None


@dataclass
class Snapshot:
    """The whole picture at one moment."""

    master_pid: int
    now: float
    uptime: float
    target_workers: int
    workers: list[WorkerStats]
    totals: Counters
    restarts: dict[str, int]
    listeners: list[ListenerStats]
    draining: bool
    stopping: bool
    loop_age: float
    fully_booted: bool
    states: dict[str, int] = field(default_factory=dict)
    connections: dict[str, int] = field(default_factory=dict)
    thread_states: dict[str, int] = field(default_factory=dict)
    scaling: dict[str, Any] | None = None

    @property
    def booted(self) -> int:
        return self.states.get("idle", 0) + self.states.get("busy", 0)

    def liveness(self) -> tuple[bool, str]:
        """Is the master alive and supervising at least one worker?"""
        if self.loop_age > LIVENESS_STALE:
            return False, f"master loop has not turned for {self.loop_age:.1f}s"
        if not self.workers:
            return False, "no worker processes"
        return True, f"master loop alive, {len(self.workers)} worker(s)"

    def readiness(self) -> tuple[bool, str]:
        """Should a load balancer send traffic here?"""
        if self.stopping:
            return False, "shutting down"
        if self.draining:
            return False, "draining"
        if self.booted == 0:
            return False, "no worker is ready"
        if not self.fully_booted:
            return False, f"{self.booted} of {self.target_workers} workers booted"
        return True, f"{self.booted} worker(s) ready"


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process, from /proc/PID/statm (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def _busy(view: SlotView) -> bool:
    return view.state == State.BUSY and view.request_start > 0


def _thread_stats(view: SlotView, now: float) -> ThreadStats:
    busy = _busy(view)
    return ThreadStats(
        number=view.thread,
        state=view.state.name.lower(),
        requests=view.requests,
        current_request=view.request_line if busy else None,
        request_age=max(0.0, now - view.request_start) if busy else None,
    )


def _worker_stats(view: SlotView, now: float, telemetry: Telemetry, threads: list[SlotView],
                  scoreboard: Scoreboard) -> WorkerStats:
    busy = _busy(view)
    return WorkerStats(
        slot=view.index,
        pid=view.pid,
        state=view.state.name.lower(),
        requests=view.requests + sum(thread.requests for thread in threads),
        current_request=view.request_line if busy else None,
        request_age=max(0.0, now - view.request_start) if busy else None,
        rss_bytes=rss_bytes(view.pid) if view.pid > 0 else None,
        age=max(0.0, now - view.booted_at) if view.booted_at else 0.0,
        heartbeat_age=max(0.0, now - view.heartbeat) if view.heartbeat else 0.0,
        last_restart_reason=telemetry.last_restart_by_slot.get(view.index),
        connections=dict(zip(CONNECTION_STATES, view.connections, strict=True)),
        threads=[_thread_stats(thread, now) for thread in sorted(threads, key=lambda item: item.thread)],
        queue_worst=max(scoreboard.queue_peak(item.index, now) for item in [view, *threads]),
    )


def snapshot(master: Master) -> Snapshot:
    """Read everything now. Only the master calls this (it owns the scoreboard's retired totals)."""
    now = time.time()
    telemetry = master.telemetry
    scoreboard = master.scoreboard
    views = scoreboard.slots() if scoreboard is not None else []
    threads_of: dict[int, list[SlotView]] = {}
    for view in views:
        if view.owner is not None:
            threads_of.setdefault(view.owner, []).append(view)
    workers = [_worker_stats(view, now, telemetry, threads_of.get(view.index, []), scoreboard)
               for view in views if view.pid > 0 and view.owner is None and scoreboard is not None]
    states = {state.name.lower(): 0 for state in _SHOWN_STATES}
    thread_states = {state.name.lower(): 0 for state in _SHOWN_STATES}
    for worker in workers:
        states[worker.state] = states.get(worker.state, 0) + 1
        # A worker without app threads runs the app on its one thread: its own state.
        for state in [thread.state for thread in worker.threads] or [worker.state]:
            thread_states[state] = thread_states.get(state, 0) + 1
    connections = dict.fromkeys(CONNECTION_STATES, 0)
    for worker in workers:
        for state, count in worker.connections.items():
            connections[state] += count
    if states["idle"] + states["busy"] >= master.target_workers:
        telemetry.fully_booted = True
    return Snapshot(
        master_pid=master.pid,
        now=now,
        uptime=max(0.0, now - telemetry.started_at),
        target_workers=master.target_workers,
        workers=workers,
        totals=scoreboard.totals() if scoreboard is not None else Counters(),
        restarts=dict(telemetry.restarts),
        listeners=[ListenerStats(describe(item), queue_depth(item.sock)) for item in master.listeners],
        draining=telemetry.draining,
        stopping=master.stopping is not None,
        loop_age=time.monotonic() - telemetry.last_tick,
        fully_booted=telemetry.fully_booted,
        states=states,
        connections=connections,
        thread_states=thread_states,
        scaling=telemetry.scaling,
    )


# -- JSON ------------------------------------------------------------------------------------


def stats_json(snap: Snapshot) -> dict[str, Any]:
    """The /stats document."""
    totals = snap.totals
    ready, ready_reason = snap.readiness()
    return {
        "version": __version__,
        "master_pid": snap.master_pid,
        "time": round(snap.now, 3),
        "uptime": round(snap.uptime, 3),
        "ready": ready,
        "ready_reason": ready_reason,
        "draining": snap.draining,
        "stopping": snap.stopping,
        "target_workers": snap.target_workers,
        "workers_by_state": snap.states,
        "threads_by_state": snap.thread_states,
        "connections_by_state": snap.connections,
        "workers": [
            {
                "slot": worker.slot,
                "pid": worker.pid,
                "state": worker.state,
                "requests": worker.requests,
                "current_request": worker.current_request,
                "request_age": _round(worker.request_age),
                "rss_bytes": worker.rss_bytes,
                "age": round(worker.age, 3),
                "heartbeat_age": round(worker.heartbeat_age, 3),
                "last_restart_reason": worker.last_restart_reason,
                "connections": worker.connections,
                "queue_time_worst": round(worker.queue_worst, 6),
                "threads": [
                    {
                        "thread": thread.number,
                        "state": thread.state,
                        "requests": thread.requests,
                        "current_request": thread.current_request,
                        "request_age": _round(thread.request_age),
                    }
                    for thread in worker.threads
                ],
            }
            for worker in snap.workers
        ],
        "totals": {
            "requests": totals.requests,
            "by_status_class": totals.by_status_class,
            "bytes_out": totals.bytes_out,
            "duration_seconds_sum": round(totals.duration_sum, 6),
            "queue_seconds_sum": round(totals.queue_sum, 6),
            "shed": totals.shed,
        },
        "restarts": snap.restarts,
        "adaptive": snap.scaling,
        "listeners": [
            {
                "address": item.address,
                "queue_depth": item.queue.waiting if item.queue else None,
                "queue_limit": item.queue.limit if item.queue else None,
            }
            for item in snap.listeners
        ],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def render_json(snap: Snapshot) -> str:
    return json.dumps(stats_json(snap), indent=1) + "\n"


# -- Prometheus text format 0.0.4 ----------------------------------------------------------------

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value == float("inf"):
        return "+Inf"
    return repr(float(value))


class _Families:
    """Collects metric families in exposition order."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, text: str,
               samples: Sequence[tuple[str, dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            if labels:
                rendered = ",".join(f'{key}="{_label_value(item)}"' for key, item in labels.items())
                self.lines.append(f"{name}{suffix}{{{rendered}}} {_number(value)}")
            else:
                self.lines.append(f"{name}{suffix} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _histogram(counts: list[int], total: float) -> list[tuple[str, dict[str, str], float]]:
    """Cumulative buckets, sum and count of a histogram kept as per-bucket counts."""
    cumulative = 0
    samples: list[tuple[str, dict[str, str], float]] = []
    for bound, count in zip([*DURATION_BUCKETS, float("inf")], counts, strict=True):
        cumulative += count
        samples.append(("_bucket", {"le": _number(bound)}, cumulative))
    return [*samples, ("_sum", {}, float(total)), ("_count", {}, cumulative)]


def render_prometheus(snap: Snapshot) -> str:
    """The /metrics document."""
    totals = snap.totals
    out = _Families()
    out.family("forkserve_requests_total", "counter",
               "Requests served, by status class of the response ('other': none was sent).",
               [("", {"status_class": name}, count) for name, count in totals.by_status_class.items()])
    out.family("forkserve_request_duration_seconds", "histogram",
               "Time from a request's complete head to the end of its response.",
               _histogram(totals.buckets, totals.duration_sum))
    out.family("forkserve_request_queue_seconds", "histogram",
               "Time a complete request (head and buffered body) waited for the app.",
               _histogram(totals.queue_buckets, totals.queue_sum))
    out.family("forkserve_requests_shed_total", "counter",
               "Requests answered 503 with Retry-After because they had waited past max_queue_time.",
               [("", {}, totals.shed)])
    out.family("forkserve_connections", "gauge",
               "Connections held by the workers, by state (reading a request, idle between "
               "keep-alive requests, in or waiting for the app, flushing a response).",
               [("", {"state": state}, count) for state, count in snap.connections.items()])
    out.family("forkserve_response_bytes_total", "counter",
               "Bytes written to clients in responses, heads included.", [("", {}, totals.bytes_out)])
    out.family("forkserve_workers", "gauge", "Worker processes by state.",
               [("", {"state": state}, count) for state, count in snap.states.items()])
    out.family("forkserve_threads", "gauge",
               "Threads running the app, by state (a worker without app threads counts as one).",
               [("", {"state": state}, count) for state, count in snap.thread_states.items()])
    out.family("forkserve_workers_target", "gauge", "Worker processes the master keeps running.",
               [("", {}, snap.target_workers)])
    out.family("forkserve_worker_restarts_total", "counter", "Workers replaced, by reason.",
               [("", {"reason": reason}, count) for reason, count in snap.restarts.items()])
    if snap.scaling is not None:
        out.family("forkserve_worker_scaling_total", "counter", "Adaptive worker count changes (max_workers).",
                   [("", {"direction": key}, count) for key, count in snap.scaling["changes"].items()])
        out.family("forkserve_workers_max", "gauge", "The adaptive worker count's ceiling (max_workers).",
                   [("", {}, snap.scaling["max_workers"])])
    known = [item for item in snap.listeners if item.queue is not None]
    out.family("forkserve_listen_queue_depth", "gauge",
               "Connections waiting in a listening socket's accept queue.",
               [("", {"listener": item.address}, item.queue.waiting) for item in known if item.queue])
    out.family("forkserve_listen_queue_limit", "gauge", "A listening socket's accept queue limit.",
               [("", {"listener": item.address}, item.queue.limit) for item in known if item.queue])
    out.family("forkserve_worker_rss_bytes", "gauge", "Resident memory of each worker process.",
               [("", {"pid": str(worker.pid), "slot": str(worker.slot)}, worker.rss_bytes)
                for worker in snap.workers if worker.rss_bytes is not None])
    out.family("forkserve_uptime_seconds", "gauge", "Seconds since the master started.",
               [("", {}, round(snap.uptime, 3))])
    out.family("forkserve_ready", "gauge", "1 when /readyz answers 200.",
               [("", {}, int(snap.readiness()[0]))])
    out.family("forkserve_build_info", "gauge", "The forkserve version.",
               [("", {"version": __version__}, 1)])
    return out.text()
