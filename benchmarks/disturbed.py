"""The scenarios with misbehaving clients, and worker memory per idle connection.

A disturbed scenario runs the hello keep-alive load under wrk twice per server and round: alone
(the server's own baseline) and beside the scenario's misbehaving clients (``slowclients.py``).
Each server is judged against its own baseline, because the question is how much of a server a
few bad clients can take away, not which server is faster. Runs alternate as in the plain
scenarios: both baselines, then both disturbed runs, in each round.

A server that stops answering leaves wrk with nothing to count: 0 requests, 0 errors and a
latency of 0. So these runs use ``lua/counted.lua``, which counts the requests wrk writes; the
requests never answered are reported, and when more than 1% of them were, the p99 is unknown
(infinite) rather than the p99 of the few answered ones.

After a disturbed run every misbehaving client is closed and the server must answer again
(within RECOVERY_TIMEOUT) before anything else is measured on it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from benchmarks.apps.bench_apps import DOWNLOAD_SIZE
from benchmarks.fanout import each
from benchmarks.procstat import rss_kib
from benchmarks.scenarios import IDLE, SLOW_READERS, STALLED, Scenario
from benchmarks.servers import RunningServer, ServerSet, ServerSpec, answers, poll_until
from benchmarks.slowclients import IdleKeepAliveClients, SlowReaders, StalledClients
from benchmarks.wrk import COUNTED_SCRIPT, WrkResult, run_wrk

RECOVERY_TIMEOUT = 60.0
UNANSWERED_SHARE = 0.01  # above this share of unanswered requests the p99 is unknown
SLOW_READER_RATE = 100_000  # bytes per second per slow reader
SETTLE_S = 0.5  # after the misbehaving clients are set up, before measuring
WARM_REQUESTS = 50  # hello requests before a memory baseline, so first-request costs are paid
# The goals the report marks (for forkserve) against each server's own baseline.
GOAL_SERVED_RATIO = 0.8  # at least this share of the baseline's served req/s
GOAL_P99_RATIO = 3.0  # a p99 at most this many times the baseline's


class RecoveryError(RuntimeError):
    """A server did not answer again after the misbehaving clients left."""


class Disturbance(Protocol):
    """What every kind of misbehaving client offers (see slowclients.py)."""

    def stop(self) -> Any: ...


@dataclass(frozen=True)
class LoadSample:
    """One wrk run of the hello load, as this module reads it."""

    served_per_second: float  # 2xx/3xx responses per second
    p50_us: float
    p99_us: float  # inf when more than UNANSWERED_SHARE of the requests were never answered
    sent: float
    unanswered: float
    errors: float  # wrk's socket errors and non-2xx/3xx answers

    @classmethod
    def from_wrk(cls, result: WrkResult) -> LoadSample:
        unknown = result.sent <= 0 or result.unanswered > UNANSWERED_SHARE * result.sent
        return cls(
            served_per_second=result.served / result.duration_s if result.duration_s else 0.0,
            p50_us=math.inf if result.served == 0 else result.latency_us["p50"],
            p99_us=math.inf if unknown or result.served == 0 else result.latency_us["p99"],
            sent=result.sent,
            unanswered=result.unanswered,
            errors=result.error_count,
        )


def _median(samples: list[LoadSample]) -> LoadSample:
    return LoadSample(**{
        item.name: statistics.median(getattr(sample, item.name) for sample in samples)
        for item in fields(LoadSample)
    })


@dataclass
class DisturbedResult:
    """Every run of one disturbed scenario, per server name, in the order taken."""

    scenario: Scenario
    connections: int
    baseline: dict[str, list[LoadSample]] = field(default_factory=dict)
    disturbed: dict[str, list[LoadSample]] = field(default_factory=dict)
    clients: dict[str, list[str]] = field(default_factory=dict)  # what happened to the bad clients
    open_at_end: dict[str, list[int]] = field(default_factory=dict)  # IDLE: connections still open

    def medians(self, server: str) -> tuple[LoadSample, LoadSample]:
        """(baseline, disturbed) medians over the rounds."""
        return _median(self.baseline[server]), _median(self.disturbed[server])


def start_disturbance(scenario: Scenario, port: int) -> Disturbance:
    """Set up the scenario's misbehaving clients against ``port``; they run until ``stop()``."""
    if scenario.disturbance == STALLED:
        return StalledClients(port, scenario.extra_clients).start()
    if scenario.disturbance == SLOW_READERS:
        return SlowReaders(port, scenario.extra_clients, "/download", SLOW_READER_RATE,
                           expected_length=DOWNLOAD_SIZE).start()
    if scenario.disturbance == IDLE:
        return IdleKeepAliveClients(port, scenario.extra_clients).start()
    raise ValueError(f"scenario {scenario.name} has no misbehaving clients ({scenario.disturbance!r})")


def wait_recovered(server: RunningServer, timeout: float = RECOVERY_TIMEOUT) -> float:
    """Until the server answers a request again; the seconds it took (inf past ``timeout``)."""
    started = time.monotonic()
    if poll_until(lambda: answers(server.port, timeout=2.0, transport=server.client), timeout, interval=0.1) is None:
        return math.inf
    return time.monotonic() - started


def _hello_load(server: RunningServer, scenario: Scenario, connections: int, duration_s: int,
                wrk: str) -> LoadSample:
    result = run_wrk(wrk, server.url + scenario.path, connections, duration_s, scenario.timeout,
                     scenario.script_args, COUNTED_SCRIPT)
    return LoadSample.from_wrk(result)


def _describe(sample: LoadSample) -> str:
    p99 = "unknown (requests unanswered)" if math.isinf(sample.p99_us) else f"{sample.p99_us:.0f} µs"
    return (f"{sample.served_per_second:.0f} req/s served, p99 {p99}, {sample.unanswered:.0f} of "
            f"{sample.sent:.0f} requests unanswered, {sample.errors:.0f} errors")


def run_disturbed(scenario: Scenario, servers: dict[str, RunningServer], connections: int, duration_s: int,
                  rounds: int, wrk: str, progress: Callable[[str], None], parallel: bool = False
                  ) -> DisturbedResult:
    """Baseline and disturbed runs of the hello load on every server (by label), ``rounds`` times.

    ``parallel`` (smoke runs) drives the servers at the same time, each beside its own clients.
    """
    result = DisturbedResult(scenario, connections)
    names = list(servers)
    for round_number in range(1, rounds + 1):
        label = f"  {scenario.name} round {round_number}/{rounds}"
        alone = each(lambda name: _hello_load(servers[name], scenario, connections, duration_s, wrk),
                     names, parallel)
        for name, sample in zip(names, alone, strict=True):
            result.baseline.setdefault(name, []).append(sample)
            progress(f"{label} {name} alone: {_describe(sample)}")

        def disturbed(name: str) -> tuple[LoadSample, Any]:
            server = servers[name]
            clients = start_disturbance(scenario, server.port)
            try:
                time.sleep(SETTLE_S)
                sample = _hello_load(server, scenario, connections, duration_s, wrk)
            finally:
                stats = clients.stop()
            return sample, stats

        for name, (sample, stats) in zip(names, each(disturbed, names, parallel), strict=True):
            server = servers[name]
            result.disturbed.setdefault(name, []).append(sample)
            result.clients.setdefault(name, []).append(stats.summary())
            if scenario.disturbance == IDLE:
                result.open_at_end.setdefault(name, []).append(stats.open_at_end)
            recovered = wait_recovered(server)
            progress(f"{label} {name} with {scenario.disturbance} clients: {_describe(sample)}; "
                     f"{stats.summary()}; answering again after {recovered:.1f} s")
            if math.isinf(recovered):
                raise RecoveryError(f"{name} did not answer within {RECOVERY_TIMEOUT:.0f} s after the "
                                   f"{scenario.name} clients left:\n{server.log_tail()}")
    return result


# -- memory per idle connection -----------------------------------------------------------------


@dataclass(frozen=True)
class MemorySample:
    """One worker's RSS before and after ``connections`` idle keep-alive connections were opened."""

    rss_before_kib: float
    rss_after_kib: float
    connections: float
    open_at_end: float

    @property
    def growth_kib(self) -> float:
        return self.rss_after_kib - self.rss_before_kib


@dataclass
class MemoryResult:
    """The memory-per-idle-connection samples, per server name."""

    scenario: Scenario
    samples: dict[str, list[MemorySample]] = field(default_factory=dict)

    def median(self, server: str) -> MemorySample:
        samples = self.samples[server]
        return MemorySample(**{
            item.name: statistics.median(getattr(sample, item.name) for sample in samples)
            for item in fields(MemorySample)
        })


def _warm(server: RunningServer) -> None:
    for _ in range(WARM_REQUESTS):
        answers(server.port)


def run_memory(scenario: Scenario, rounds: int, workdir: Path, progress: Callable[[str], None],
               specs: tuple[ServerSpec, ...] | None = None) -> MemoryResult:
    """Each round starts every server afresh with one worker (a worker's RSS never shrinks back,
    so a second measurement on the same worker would see the first one's memory as free)."""
    result = MemoryResult(scenario)
    for round_number in range(1, rounds + 1):
        with ServerSet(scenario.app, 1, workdir, specs or scenario.servers) as servers:
            for server in servers:
                progress(server.describe())
            for server in servers:
                _warm(server)
                worker = server.worker_pids()[0]
                before = rss_kib(worker)
                clients = IdleKeepAliveClients(server.port, scenario.extra_clients).start()
                try:
                    time.sleep(SETTLE_S)
                    after = rss_kib(worker)
                finally:
                    stats = clients.stop()
                if worker not in server.worker_pids():
                    progress(f"warning: {server.kind.name}'s worker {worker} exited during {scenario.name}")
                sample = MemorySample(before, after, scenario.extra_clients, stats.open_at_end)
                result.samples.setdefault(server.kind.name, []).append(sample)
                progress(f"  {scenario.name} round {round_number}/{rounds} {server.kind.name}: worker RSS "
                         f"{before} -> {after} KiB with {stats.summary()}")
    return result
