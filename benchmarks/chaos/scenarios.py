"""One disturbance per scenario, against a real forkserve under the chaos load.

A scenario starts ``forkserve -w 4`` (its own temporary directory, pidfile and log, its own
session), starts the load, waits a quarter of the duration, then disturbs the server and waits
(with a deadline) until the disturbance has done what it should — a new generation of workers,
a replaced worker, a new master serving — and lets the load run to the end of the duration (at
least TAIL_S after the disturbance). Then the load stops, the server is stopped, and the
records are judged: every request that was sent must have its correct answer.

The adaptive scenario starts one worker (``--max-workers 4``) of an I/O-bound app under a light
load, adds a burst of clients until the fleet has grown to its maximum, stops the burst and
waits, the light load still running, until the fleet is back to one worker: every request of
both loads must be answered.

The one exception is what a SIGKILLed worker had in its hands: the request in the app (one per
app thread), and a request sent at that moment on a connection the worker held (its loop holds
many). They are counted apart ("killed in flight") when they broke as the kill happened — sent
before it, broken within a moment after it; any other loss counts. Over TLS the worker's loop
also holds connections still in their handshake: those that broke the same way are excused too
(no request had been sent on them), and said so in the notes.

Every scenario runs over one transport (``Settings.transport``, ``benchmarks/transports.py``):
forkserve gets the matching options (a certificate made once per run in the work directory, a
PROXY v1 header required, or the uwsgi protocol), and the load, the readiness probe, the
stalled and the slow clients all speak it.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.apps.bench_apps import DOWNLOAD_SIZE
from benchmarks.chaos.load import HANDSHAKE_FAILED, NOT_SENT, OK, ChaosLoad, Record, Summary, summarize
from benchmarks.procstat import children
from benchmarks.servers import (
    READY_TIMEOUT,
    Launch,
    RunningServer,
    ServerKind,
    module_launcher,
    pid_alive,
    poll_until,
)
from benchmarks.slowclients import SlowReaders, StalledClients
from benchmarks.transports import HTTP, TLS, Certificate, ensure_certificate, server_args

APP = "benchmarks.apps.chaos_app:application"
WORKERS = 4
LEAD_SHARE = 0.25  # of the duration, load before the disturbance
TAIL_S = 1.0  # at least this much load after the disturbance is over
SIGNAL_DEADLINE = 30.0  # for a disturbance to take effect
KILLED_WINDOW_S = 1.0  # a loss this soon after the SIGKILL is the killed worker's request
RELOAD_ARGS = {"rolling-hup": ("--reload-strategy", "rolling"), "max-requests": ("--max-requests", "50"),
               "adaptive": ("--max-workers", "4", "--scale-up-queue-time", "0.05", "--scale-down-after", "0.5")}
ADAPTIVE_MAX = 4
ADAPTIVE_DELAY = "0.02"  # seconds the app waits per request in the adaptive scenario


class DisturbanceFailed(RuntimeError):
    """The disturbance did not take effect within its deadline."""


@dataclass
class Settings:
    """How long, how hard, and with what the suite runs."""

    duration_s: float = 10.0
    threads: int = 8
    request_timeout: float = 10.0
    stalled: int = 200
    slow_readers: int = 20
    server_args: tuple[str, ...] = ()
    seed: int = 1
    transport: str = HTTP  # http, tls, proxy or uwsgi (benchmarks/transports.py)


class ChaosServer(RunningServer):
    """forkserve started for one scenario, which follows its master across a USR2 upgrade."""

    def __init__(self, workdir: Path, extra: tuple[str, ...], workers: int = WORKERS,
                 env: dict[str, str] | None = None, transport: str = HTTP,
                 certificate: Certificate | None = None) -> None:
        self.pidfile = workdir / "forkserve.pid"
        kind = ServerKind("forkserve", module_launcher("forkserve", ("--pid", str(self.pidfile), "--log-level",
                                                                  "info", *extra)))
        self.master = 0
        super().__init__(Launch(kind, APP, workers, server_args(transport), transport), workdir, env, certificate)
        self.master = self.pid

    def worker_pids(self) -> list[int]:
        pids = [pid for pid in children(self.master or self.pid) if pid_alive(pid)]
        self._seen_workers.update(pids)
        return pids

    def signal(self, signum: int) -> None:
        os.kill(self.master, signum)

    def stop(self) -> list[int]:
        """TERM the current master (the new one after an upgrade) first, then the usual stop."""
        if self.master != self.pid and pid_alive(self.master):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.master, signal.SIGTERM)
            _wait(lambda: not pid_alive(self.master), 15.0, "")
        return super().stop()


def _wait(condition: Callable[[], object], timeout: float, what: str) -> object:
    """``condition()``'s first truthy value; DisturbanceFailed naming ``what`` after ``timeout``
    (or just None when ``what`` is empty)."""
    result = poll_until(condition, timeout)
    if result is None and what:
        raise DisturbanceFailed(f"timed out after {timeout:.0f} s waiting for {what}")
    return result


@dataclass
class Context:
    """What a disturbance works with, and what it reports back."""

    server: ChaosServer
    settings: Settings
    notes: list[str] = field(default_factory=list)
    killed_at: float = math.nan  # time.monotonic() of a SIGKILL to a worker
    refusals_allowed_after: float = math.inf  # connections refused after this moment are expected
    workers_seen: set[int] = field(default_factory=set)
    extra_records: list[Record] = field(default_factory=list)  # a second load's, judged with the first


def _new_generation(ctx: Context, old: set[int], what: str) -> None:
    def replaced() -> bool:
        workers = set(ctx.server.worker_pids())
        return len(workers) == WORKERS and not workers & old

    _wait(replaced, SIGNAL_DEADLINE, what)
    ctx.notes.append(f"{what}: workers {sorted(old)} -> {sorted(ctx.server.worker_pids())}")


def hup(ctx: Context) -> None:
    """HUP: a new generation of workers replaces the old one (all at once, or rolling)."""
    old = set(ctx.server.worker_pids())
    ctx.server.signal(signal.SIGHUP)
    _new_generation(ctx, old, "a new generation after HUP")


def sigkill_worker(ctx: Context) -> None:
    """SIGKILL one worker: the master replaces it; the requests in its hands may be lost."""
    workers = ctx.server.worker_pids()
    victim = random.Random(ctx.settings.seed).choice(workers)
    ctx.killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    _wait(lambda: not pid_alive(victim) and len(ctx.server.worker_pids()) == WORKERS, SIGNAL_DEADLINE,
          f"worker {victim} to be replaced after SIGKILL")
    ctx.notes.append(f"SIGKILLed worker {victim}; workers now {sorted(ctx.server.worker_pids())}")


def max_requests(ctx: Context) -> None:
    """--max-requests 50: the load itself makes the workers recycle; wait to see it happen."""
    first = set(ctx.server.worker_pids())

    def recycled() -> bool:
        ctx.workers_seen.update(ctx.server.worker_pids())
        return len(ctx.workers_seen - first) >= WORKERS

    _wait(recycled, SIGNAL_DEADLINE, f"{WORKERS} workers recycled by max_requests")


def ttin_ttou(ctx: Context) -> None:
    """TTIN (one worker more), then TTOU (one fewer)."""
    ctx.server.signal(signal.SIGTTIN)
    _wait(lambda: len(ctx.server.worker_pids()) == WORKERS + 1, SIGNAL_DEADLINE, "a fifth worker after TTIN")
    ctx.server.signal(signal.SIGTTOU)
    _wait(lambda: len(ctx.server.worker_pids()) == WORKERS, SIGNAL_DEADLINE, "back to 4 workers after TTOU")
    ctx.notes.append("TTIN: 5 workers; TTOU: 4 workers")


def _read_pid(path: Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return 0


def usr2(ctx: Context) -> None:
    """USR2, then WINCH and TERM to the old master: the new master (PIDFILE.2, then PIDFILE)
    must go on serving alone."""
    server = ctx.server
    old_master, old_workers = server.master, set(server.worker_pids())
    second = server.pidfile.with_name(server.pidfile.name + ".2")
    server.signal(signal.SIGUSR2)
    new_master = int(_wait(lambda: _read_pid(second), SIGNAL_DEADLINE, "the new master's PIDFILE.2"))  # type: ignore[arg-type]
    _wait(lambda: len([pid for pid in children(new_master) if pid_alive(pid)]) == WORKERS, SIGNAL_DEADLINE,
          "the new master's workers")
    os.kill(old_master, signal.SIGWINCH)
    _wait(lambda: not any(map(pid_alive, old_workers)), SIGNAL_DEADLINE, "the old workers to stop after WINCH")
    os.kill(old_master, signal.SIGTERM)
    _wait(lambda: not pid_alive(old_master), SIGNAL_DEADLINE, "the old master to exit after TERM")
    server.master = new_master
    _wait(lambda: _read_pid(server.pidfile) == new_master, SIGNAL_DEADLINE, "the new master to take PIDFILE")
    ctx.notes.append(f"USR2: master {old_master} -> {new_master} (PIDFILE.2, then PIDFILE); WINCH and TERM "
                     f"to the old one; new workers {sorted(server.worker_pids())}")


def term(ctx: Context) -> None:
    """TERM: the master serves what was sent and queued, then closes its sockets and exits;
    connections refused after the TERM are expected (a client can retry them elsewhere)."""
    ctx.refusals_allowed_after = time.monotonic()
    ctx.server.signal(signal.SIGTERM)
    _wait(lambda: ctx.server.process.poll() is not None, 60, "the master to exit after TERM")
    ctx.notes.append(f"TERM: master exited with {ctx.server.process.returncode} after "
                     f"{time.monotonic() - ctx.refusals_allowed_after:.1f} s")


def _hold(ctx: Context, clients: StalledClients | SlowReaders) -> None:
    """Keep the misbehaving clients on for half the duration, and longer than the request
    timeout, then let them go: a server they take away for less than a client's patience would
    only show as a few slow requests (and a p99 that hides them)."""
    try:
        time.sleep(max(ctx.settings.duration_s * 0.5, ctx.settings.request_timeout + 1))
    finally:
        stats = clients.stop()
    ctx.notes.append(stats.summary())


def stalled_clients(ctx: Context) -> None:
    """Stalled half-head connections (``--stalled`` of them), held as ``_hold`` says; over
    another transport, half of its own opening too (``ClientTransport.open_stalled``)."""
    _hold(ctx, StalledClients(ctx.server.port, ctx.settings.stalled, transport=ctx.server.client).start())


def slow_readers(ctx: Context) -> None:
    """Clients reading 1 MiB at 100 KB/s (``--slow-readers`` of them) over the scenario's
    transport, held as ``_hold`` says."""
    _hold(ctx, SlowReaders(ctx.server.port, ctx.settings.slow_readers, "/download", 100_000,
                           expected_length=DOWNLOAD_SIZE, transport=ctx.server.client).start())


def app_threads(server_args: tuple[str, ...]) -> int:
    """The --threads value among forkserve's arguments (1 when absent)."""
    for index, arg in enumerate(server_args):
        if arg == "--threads" and index + 1 < len(server_args):
            return int(server_args[index + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return 1


def adaptive(ctx: Context) -> None:
    """A burst of clients on a one-worker fleet of an I/O-bound app: it grows to max_workers; the
    burst stops: it shrinks back to one worker, idle workers first, while the light load runs on."""
    # As many clients per app thread whatever --threads is: with 4 threads a worker takes 4 at
    # once, so the sync burst alone would queue too little to need 4 workers.
    clients = 2 * ctx.settings.threads * app_threads(ctx.settings.server_args)
    burst = ChaosLoad(ctx.server.port, clients, ctx.settings.request_timeout,
                      ctx.settings.seed + 1, transport=ctx.server.client).start()
    try:
        grown = len(_wait(lambda: (pids := ctx.server.worker_pids()) and len(pids) >= ADAPTIVE_MAX and pids,
                          SIGNAL_DEADLINE, f"the fleet to grow to {ADAPTIVE_MAX} workers under the burst"))
    finally:
        burst.stop()
        ctx.extra_records += burst.snapshot()
    _wait(lambda: len(ctx.server.worker_pids()) == 1, SIGNAL_DEADLINE, "the fleet to shrink back to 1 worker")
    changes = [line.split("adaptive: ", 1)[1] for line in ctx.server.log_tail(400).splitlines()
               if "adaptive: " in line]
    ctx.notes.append(f"adaptive (-w 1 --max-workers {ADAPTIVE_MAX}, the app waiting {ADAPTIVE_DELAY} s per "
                     f"request, 1 client): grew to {grown} workers under {clients} more clients "
                     f"({len(ctx.extra_records)} requests), back to 1 once they stopped")
    ctx.notes += [f"log: {change}" for change in changes]


def steady(ctx: Context) -> None:
    """No disturbance: the load alone (what every other scenario is compared with)."""


DISTURBANCES: dict[str, Callable[[Context], None]] = {
    "steady": steady,
    "hup": hup,
    "rolling-hup": hup,
    "sigkill-worker": sigkill_worker,
    "max-requests": max_requests,
    "ttin-ttou": ttin_ttou,
    "usr2": usr2,
    "term": term,
    "stalled-clients": stalled_clients,
    "slow-readers": slow_readers,
    "adaptive": adaptive,
}


@dataclass
class Outcome:
    """A scenario's judged result."""

    name: str
    summary: Summary
    excused: int  # the requests the SIGKILLed worker had in its hands
    refused_expected: int  # refused / no connection / failed handshakes after TERM
    served_after: int  # correct answers after the disturbance was over
    notes: list[str]
    error: str = ""  # the disturbance failed, or the server did not start
    handshakes_excused: int = 0  # TLS handshakes the SIGKILLed worker had in progress

    @property
    def unexpected_refusals(self) -> int:
        return self.summary.not_sent - self.refused_expected - self.handshakes_excused

    @property
    def passed(self) -> bool:
        return (not self.error and self.summary.lost_total - self.excused == 0
                and self.unexpected_refusals == 0 and (self.served_after > 0 or self.name == "term"))


def _killed_in_flight(records: list[Record], killed_at: float) -> list[Record]:
    """The losses that broke as the worker was killed: the requests it had in its hands (the one
    in the app, or one per app thread, and any complete request waiting in its loop), and the
    TLS handshakes it had in progress."""
    if math.isnan(killed_at):
        return []
    return [record for record in records
            if record.outcome in ("reset", "reset-on-reuse", "truncated", HANDSHAKE_FAILED)
            and record.started <= killed_at + 0.05 and killed_at <= record.finished <= killed_at + KILLED_WINDOW_S]


def _when_lost(records: list[Record], excused: list[Record], disturbance_start: float) -> str:
    """When the lost requests ended, relative to the disturbance (where to look for the cause)."""
    lost = [record for record in records
            if record.outcome != OK and record.outcome not in NOT_SENT and not any(record is item for item in excused)]
    if not lost:
        return ""
    offsets = sorted(record.finished - disturbance_start for record in lost)
    reused = sum(record.reused for record in lost)
    return (f"{len(lost)} lost request(s) ended between {offsets[0]:+.2f} s and {offsets[-1]:+.2f} s from "
            f"the start of the disturbance ({reused} on a reused keep-alive connection)")


def judge(name: str, records: list[Record], ctx: Context, disturbance: tuple[float, float],
          error: str) -> Outcome:
    """Count the records and apply the scenario's exceptions (see the module docstring);
    ``disturbance`` is when it started and ended (time.monotonic())."""
    summary = summarize(records)
    notes = list(ctx.notes)
    killed = _killed_in_flight(records, ctx.killed_at)
    handshakes = sum(record.outcome == HANDSHAKE_FAILED for record in killed)
    excused = len(killed) - handshakes
    for record in killed:
        if record.outcome == HANDSHAKE_FAILED:
            notes.append(f"a TLS handshake in the killed worker's hands failed "
                         f"{(record.finished - ctx.killed_at) * 1000:.0f} ms after the kill (no request sent; excused)")
        else:
            notes.append(f"a request in the killed worker's hands: {record.method} {record.outcome} "
                         f"{(record.finished - ctx.killed_at) * 1000:.0f} ms after the kill (excused)")
    when = _when_lost(records, killed, disturbance[0])
    if when:
        notes.append(when)
    disturbance_end = disturbance[1]
    refused_expected = sum(1 for record in records if record.outcome in NOT_SENT
                           and record.started >= ctx.refusals_allowed_after)
    served_after = sum(1 for record in records if record.outcome == OK and record.started >= disturbance_end)
    return Outcome(name, summary, excused, refused_expected, served_after, notes, error, handshakes)


def run_scenario(name: str, settings: Settings, workdir: Path, progress: Callable[[str], None]) -> Outcome:
    """Start forkserve, load it, disturb it, judge; the server and every client are always
    stopped on the way out."""
    extra = (*RELOAD_ARGS.get(name, ()), *settings.server_args)
    scenario_dir = workdir / name
    scenario_dir.mkdir()
    adaptive_run = name == "adaptive"
    certificate = ensure_certificate(workdir) if settings.transport == TLS else None  # one per run
    server = ChaosServer(scenario_dir, extra, workers=1 if adaptive_run else WORKERS,
                         env={"CHAOS_APP_DELAY": ADAPTIVE_DELAY} if adaptive_run else None,
                         transport=settings.transport, certificate=certificate)
    load: ChaosLoad | None = None
    error = ""
    try:
        server.wait_ready(time.monotonic() + READY_TIMEOUT)
        ctx = Context(server, settings)
        progress(f"{name}: {server.describe().strip()}")
        threads = 1 if adaptive_run else settings.threads  # (adaptive: a light load; the burst is its own)
        load = ChaosLoad(server.port, threads, settings.request_timeout, settings.seed,
                         transport=server.client).start()
        started = time.monotonic()
        _watch_workers(ctx, LEAD_SHARE * settings.duration_s)
        disturbance_start = time.monotonic()
        try:
            DISTURBANCES[name](ctx)
        except DisturbanceFailed as failure:
            error = str(failure)
            progress(f"{name}: disturbance failed: {failure}\n{server.log_tail()}")
        disturbance_end = time.monotonic()
        _watch_workers(ctx, max(TAIL_S, started + settings.duration_s - disturbance_end))
        stuck = load.stop()
        if stuck:
            error = error or f"client threads still running after the request timeout: {stuck}"
        if name == "max-requests":
            ctx.notes.append(f"max_requests: {len(ctx.workers_seen)} worker pids over the run "
                             f"({len(ctx.workers_seen) - WORKERS} recycled)")
        return judge(name, load.snapshot() + ctx.extra_records, ctx, (disturbance_start, disturbance_end), error)
    finally:
        if load is not None:
            load.stop()
        forced = server.stop()
        if forced:
            progress(f"{name}: warning: pids {forced} survived TERM and were killed")


def _watch_workers(ctx: Context, seconds: float) -> None:
    """Sleep ``seconds`` while noting every worker pid seen (how recycling is observed)."""
    deadline = time.monotonic() + seconds
    while True:
        ctx.workers_seen.update(ctx.server.worker_pids())
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(0.05, left))
