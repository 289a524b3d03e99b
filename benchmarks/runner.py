"""The measuring loop: servers side by side, runs alternated, medians of rounds.

Each scenario names the servers it compares (``Scenario.servers``: a kind, its arguments, its
worker count). A server is started the first time a scenario needs it, together with the other
servers that scenario needs, and kept for every later scenario that needs exactly the same
server (same kind, app, worker count and arguments); it is stopped as soon as no later scenario
does (``servers.ServerPool``). Scenarios run grouped by app, so each app's servers are up only
while its scenarios run.

Each scenario runs in rounds, each round one wrk run per server in turn (forkserve, gunicorn,
uwsgi, granian, forkserve …), so a burst of noise from the rest of the machine lands on all of
them rather than on one. Each metric's figure is the median over rounds.

A smoke run (``Settings.parallel``) drives a scenario's servers at the same time instead: its
figures mean nothing anyway, and the runner's whole path is still exercised in a fraction of
the time.
"""

from __future__ import annotations

import math
import shlex
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

from benchmarks.disturbed import DisturbedResult, MemoryResult, run_disturbed, run_memory
from benchmarks.fanout import each
from benchmarks.probe import Prober
from benchmarks.procstat import pss_kib, rss_kib, tree_cpu_split, worker_kib
from benchmarks.scenarios import DISTURBED, MEMORY, Scenario
from benchmarks.servers import BIND, Launch, RunningServer, ServerKind, ServerPool, ServerSpec
from benchmarks.wrk import WrkError, find_wrk, run_wrk


@dataclass(frozen=True)
class Settings:
    """How hard and how long to measure."""

    workers: int = 2
    connections: int = 8
    duration_s: int = 10
    rounds: int = 3
    warmup_s: int = 2
    parallel: bool = False  # drive a scenario's servers at once (smoke runs: nothing is measured)


@dataclass(frozen=True)
class Sample:
    """One wrk run against one server, with the server's CPU and memory around it."""

    requests_per_second: float
    p50_us: float
    p99_us: float
    max_us: float
    cpu_us_per_request: float
    worker_rss_kib: float  # the median worker's
    worker_pss_kib: float
    errors: float
    requests: float
    workers: float = 0.0  # live workers after the run
    total_rss_kib: float = 0.0  # summed over those workers
    total_pss_kib: float = 0.0
    probes_sent: float = 0.0  # newcomers during the run (probe.py)
    probes_answered: float = 0.0
    probe_slowest_us: float = 0.0
    kernel_us_per_request: float = math.nan  # the system-time part of cpu_us_per_request


def median_sample(samples: list[Sample]) -> Sample:
    """Each metric's median over the rounds, taken metric by metric."""
    values = {
        item.name: statistics.median(getattr(sample, item.name) for sample in samples)
        for item in fields(Sample)
    }
    return Sample(**values)


@dataclass
class ScenarioResult:
    """Every sample of one scenario, per server label (the candidate first), in the order they
    were taken, and the kinds of error wrk counted (connect, read, write, timeout, status) summed
    over the rounds."""

    scenario: Scenario
    connections: int
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    error_kinds: dict[str, Counter[str]] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)  # label -> the server's arguments
    notes: list[str] = field(default_factory=list)  # workers replaced during a run

    def median(self, server: str) -> Sample:
        return median_sample(self.samples[server])

    @property
    def servers(self) -> list[str]:
        """Labels in the scenario's order: the candidate, then what it is compared with."""
        return list(self.samples)


def _median_of(values: list[int]) -> float:
    return statistics.median(values) if values else 0.0


def measure(server: RunningServer, scenario: Scenario, connections: int, duration_s: int,
            wrk: str) -> tuple[Sample, dict[str, int], str]:
    """One wrk run against ``server``, a prober beside it; CPU is the server tree's, sampled
    just before and after.

    Returns the sample, wrk's error counts by kind, and what changed among the server's workers
    during the run ('' when nothing did: a replaced worker is a crash or a watchdog's kill,
    which the figures alone would hide).
    """
    before_workers = set(server.worker_pids())
    user_before, system_before = tree_cpu_split(server.pid)
    prober = Prober(server.port, scenario.path, server.client).start()
    try:
        result = run_wrk(wrk, server.url + scenario.path, connections, duration_s, scenario.timeout,
                         scenario.script_args)
    finally:
        probes = prober.stop()
    user_after, system_after = tree_cpu_split(server.pid)
    after_workers = set(server.worker_pids())
    change = ""
    if after_workers != before_workers:
        change = (f"workers changed during the run: {sorted(before_workers)} -> {sorted(after_workers)} "
                  f"(see the server's log)")
        print(f"warning: {server.kind.name} {change} of {scenario.name}", file=sys.stderr)
    requests = result.requests
    rss = worker_kib(server.pid, rss_kib)
    pss = worker_kib(server.pid, pss_kib)
    sample = Sample(
        requests_per_second=result.requests_per_second,
        p50_us=result.latency_us["p50"],
        p99_us=result.latency_us["p99"],
        max_us=result.latency_us["max"],
        cpu_us_per_request=(user_after + system_after - user_before - system_before) * 1e6 / requests
        if requests else math.nan,
        kernel_us_per_request=(system_after - system_before) * 1e6 / requests if requests else math.nan,
        worker_rss_kib=_median_of(rss),
        worker_pss_kib=_median_of(pss),
        errors=result.error_count,
        requests=requests,
        workers=len(rss),
        total_rss_kib=sum(rss),
        total_pss_kib=sum(pss),
        probes_sent=probes.sent,
        probes_answered=probes.answered,
        probe_slowest_us=probes.slowest_us,
    )
    return sample, result.errors, change


def by_app(scenarios: list[Scenario]) -> list[Scenario]:
    """Scenarios grouped by app, groups in order of first appearance, each group in its order."""
    groups: dict[str, list[Scenario]] = {}
    for scenario in scenarios:
        groups.setdefault(scenario.app, []).append(scenario)
    return [scenario for group in groups.values() for scenario in group]


def entrants(scenario: Scenario, comparators: Iterable[ServerKind]) -> tuple[ServerSpec, ...]:
    """The scenario's servers less the optional kinds not being run."""
    running = set(comparators)
    return tuple(spec for spec in scenario.servers if not spec.kind.optional or spec.kind in running)


def describe_launch(launch: Launch) -> str:
    """'forkserve --threads 8 (2 workers)': what a progress line, or the report's list of
    scenarios, says a server runs with (the address, filled in at launch, as HOST:PORT)."""
    arguments = shlex.join(arg.replace(BIND, "HOST:PORT") for arg in launch.args)
    return " ".join(filter(None, [launch.kind.name, arguments, f"({launch.workers} workers)"]))


Result = ScenarioResult | DisturbedResult | MemoryResult


def run(scenarios: list[Scenario], settings: Settings, comparators: tuple[ServerKind, ...] = (),
        progress: Callable[[str], None] = print) -> list[Result]:
    """Measure every scenario on its servers; servers are always stopped on the way out.

    ``comparators`` are the optional server kinds to run (uWSGI, granian): a scenario's other
    optional servers are left out. The memory scenarios start servers of their own (one worker
    each), after the others.
    """
    wrk = find_wrk()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="forkserve-bench-") as workdir:
        served = by_app([scenario for scenario in scenarios if scenario.mode != MEMORY])
        plans = []
        for scenario in served:
            specs = entrants(scenario, comparators)
            plans.append((scenario, specs, [Launch.of(spec, scenario.app, settings.workers) for spec in specs]))
        with ServerPool(Path(workdir)) as pool:
            for index, (scenario, specs, launches) in enumerate(plans):
                missing = [launch for launch in dict.fromkeys(launches) if launch not in pool.running]
                if missing:
                    progress(f"starting {', '.join(map(describe_launch, missing))} with {scenario.app}")
                servers, started = pool.acquire(launches)
                for server in started:
                    progress(server.describe())
                if settings.warmup_s > 0:
                    each(lambda server, s=scenario: _warm_up(server, s, settings, wrk), started,
                         settings.parallel)
                named = {spec.name(settings.workers): server for spec, server in zip(specs, servers, strict=True)}
                if scenario.mode == DISTURBED:
                    connections = scenario.connections(settings.connections, settings.workers)
                    results.append(run_disturbed(scenario, named, connections, settings.duration_s,
                                                 settings.rounds, wrk, progress, settings.parallel))
                else:
                    results.append(_run_scenario(scenario, named, settings, wrk, progress))
                pool.keep_only(launch for _, _, later in plans[index + 1:] for launch in later)
        for scenario in scenarios:
            if scenario.mode == MEMORY:
                specs = entrants(scenario, comparators)
                progress(f"starting {', '.join(spec.kind.name for spec in specs)} with {scenario.app}, "
                         f"1 worker each, afresh for every round of {scenario.name}")
                results.append(run_memory(scenario, settings.rounds, Path(workdir), progress, specs))
    return results


def _warm_up(server: RunningServer, scenario: Scenario, settings: Settings, wrk: str) -> None:
    """A short unmeasured run so imports, caches and the first accept are paid before measuring."""
    try:
        run_wrk(wrk, server.url + scenario.path, scenario.connections(settings.connections,
                settings.workers), settings.warmup_s, scenario.timeout, scenario.script_args)
    except WrkError as error:
        raise WrkError(f"warm-up of {server.kind.name} failed: {error}") from None


def _run_scenario(scenario: Scenario, servers: dict[str, RunningServer], settings: Settings, wrk: str,
                  progress: Callable[[str], None]) -> ScenarioResult:
    connections = scenario.connections(settings.connections, settings.workers)
    result = ScenarioResult(scenario, connections)
    for label, server in servers.items():
        result.commands[label] = describe_launch(server.launch)
    labels = list(servers)
    for round_number in range(1, settings.rounds + 1):
        measured = each(lambda label: measure(servers[label], scenario, connections, settings.duration_s, wrk),
                        labels, settings.parallel)
        for label, (sample, errors, change) in zip(labels, measured, strict=True):
            result.samples.setdefault(label, []).append(sample)
            result.error_kinds.setdefault(label, Counter()).update(errors)
            if change:
                result.notes.append(f"{scenario.name} / {label}, round {round_number}: {change}")
            progress(
                f"  {scenario.name} round {round_number}/{settings.rounds} {label}: "
                f"{sample.requests_per_second:.0f} req/s, p99 {sample.p99_us:.0f} µs, "
                f"{sample.cpu_us_per_request:.0f} µs CPU/req, {sample.errors:.0f} errors, "
                f"{sample.probes_answered:.0f}/{sample.probes_sent:.0f} new clients answered in time"
            )
    return result
