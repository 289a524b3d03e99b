"""The measuring loop: servers side by side, runs alternated, medians of rounds.

For each app the scenarios need, every server is started once with that app (all at the same
time, same worker count) and kept for the scenarios that use it. Each scenario then runs in
rounds, each round one wrk run per server in turn (forkserve, gunicorn, forkserve, gunicorn …),
so a burst of noise from the rest of the machine lands on both rather than on one. Each metric's
figure is the median over rounds.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from benchmarks.disturbed import DisturbedResult, MemoryResult, run_disturbed, run_memory
from benchmarks.procstat import median_worker_kib, pss_kib, rss_kib, tree_cpu_seconds
from benchmarks.scenarios import DISTURBED, MEMORY, Scenario
from benchmarks.servers import KINDS, RunningServer, ServerKind, ServerSet
from benchmarks.wrk import WrkError, find_wrk, run_wrk


@dataclass(frozen=True)
class Settings:
    """How hard and how long to measure."""

    workers: int = 2
    connections: int = 8
    duration_s: int = 10
    rounds: int = 3
    warmup_s: int = 2


@dataclass(frozen=True)
class Sample:
    """One wrk run against one server, with the server's CPU and memory around it."""

    requests_per_second: float
    p50_us: float
    p99_us: float
    max_us: float
    cpu_us_per_request: float
    worker_rss_kib: float
    worker_pss_kib: float
    errors: float
    requests: float


def median_sample(samples: list[Sample]) -> Sample:
    """Each metric's median over the rounds, taken metric by metric."""
    values = {
        item.name: statistics.median(getattr(sample, item.name) for sample in samples)
        for item in fields(Sample)
    }
    return Sample(**values)


@dataclass
class ScenarioResult:
    """Every sample of one scenario, per server name, in the order they were taken, and the kinds
    of error wrk counted (connect, read, write, timeout, status) summed over the rounds."""

    scenario: Scenario
    connections: int
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    error_kinds: dict[str, Counter[str]] = field(default_factory=dict)

    def median(self, server: str) -> Sample:
        return median_sample(self.samples[server])


def measure(server: RunningServer, scenario: Scenario, connections: int, duration_s: int,
            wrk: str) -> tuple[Sample, dict[str, int]]:
    """One wrk run against ``server``; CPU is the server tree's, sampled just before and after.

    Returns the sample and wrk's error counts by kind.
    """
    before_workers = set(server.worker_pids())
    cpu_before = tree_cpu_seconds(server.pid)
    result = run_wrk(wrk, server.url + scenario.path, connections, duration_s, scenario.timeout,
                     scenario.script_args)
    cpu_after = tree_cpu_seconds(server.pid)
    after_workers = set(server.worker_pids())
    if after_workers != before_workers:
        print(f"warning: {server.kind.name} workers changed during {scenario.name} "
              f"({sorted(before_workers)} -> {sorted(after_workers)})", file=sys.stderr)
    requests = result.requests
    sample = Sample(
        requests_per_second=result.requests_per_second,
        p50_us=result.latency_us["p50"],
        p99_us=result.latency_us["p99"],
        max_us=result.latency_us["max"],
        cpu_us_per_request=(cpu_after - cpu_before) * 1e6 / requests if requests else math.nan,
        worker_rss_kib=median_worker_kib(server.pid, rss_kib),
        worker_pss_kib=median_worker_kib(server.pid, pss_kib),
        errors=result.error_count,
        requests=requests,
    )
    return sample, result.errors


def _by_app(scenarios: list[Scenario]) -> list[tuple[str, list[Scenario]]]:
    """Scenarios grouped by app, groups in order of first appearance."""
    groups: dict[str, list[Scenario]] = {}
    for scenario in scenarios:
        groups.setdefault(scenario.app, []).append(scenario)
    return list(groups.items())


Result = ScenarioResult | DisturbedResult | MemoryResult


def run(scenarios: list[Scenario], settings: Settings, kinds: tuple[ServerKind, ...] = KINDS,
        progress: Callable[[str], None] = print) -> list[Result]:
    """Measure every scenario on every server kind; servers are always stopped on the way out.

    The memory scenarios start servers of their own (one worker each), after the others.
    """
    wrk = find_wrk()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="forkserve-bench-") as workdir:
        served = [scenario for scenario in scenarios if scenario.mode != MEMORY]
        for app, group in _by_app(served):
            progress(f"starting {', '.join(kind.name for kind in kinds)} with {app}, "
                     f"{settings.workers} workers each")
            with ServerSet(app, settings.workers, Path(workdir), kinds) as servers:
                for server in servers:
                    progress(server.describe())
                if settings.warmup_s > 0:
                    for server in servers:
                        _warm_up(server, group[0], settings, wrk)
                for scenario in group:
                    if scenario.mode == DISTURBED:
                        connections = scenario.connections(settings.connections, settings.workers)
                        results.append(run_disturbed(scenario, servers, connections, settings.duration_s,
                                                     settings.rounds, wrk, progress))
                    else:
                        results.append(_run_scenario(scenario, servers, settings, wrk, progress))
        for scenario in scenarios:
            if scenario.mode == MEMORY:
                progress(f"starting {', '.join(kind.name for kind in kinds)} with {scenario.app}, "
                         f"1 worker each, afresh for every round of {scenario.name}")
                results.append(run_memory(scenario, settings.rounds, Path(workdir), progress, kinds))
    return results


def _warm_up(server: RunningServer, scenario: Scenario, settings: Settings, wrk: str) -> None:
    """A short unmeasured run so imports, caches and the first accept are paid before measuring."""
    try:
        run_wrk(wrk, server.url + scenario.path, scenario.connections(settings.connections,
                settings.workers), settings.warmup_s, scenario.timeout, scenario.script_args)
    except WrkError as error:
        raise WrkError(f"warm-up of {server.kind.name} failed: {error}") from None


def _run_scenario(scenario: Scenario, servers: list[RunningServer], settings: Settings, wrk: str,
                  progress: Callable[[str], None]) -> ScenarioResult:
    connections = scenario.connections(settings.connections, settings.workers)
    result = ScenarioResult(scenario, connections)
    for round_number in range(1, settings.rounds + 1):
        for server in servers:
            sample, errors = measure(server, scenario, connections, settings.duration_s, wrk)
            result.samples.setdefault(server.kind.name, []).append(sample)
            result.error_kinds.setdefault(server.kind.name, Counter()).update(errors)
            progress(
                f"  {scenario.name} round {round_number}/{settings.rounds} {server.kind.name}: "
                f"{sample.requests_per_second:.0f} req/s, p99 {sample.p99_us:.0f} µs, "
                f"{sample.cpu_us_per_request:.0f} µs CPU/req, {sample.errors:.0f} errors"
            )
    return result
