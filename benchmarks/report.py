"""The Markdown report: where it ran, what ran, the tables, and how they compare to the targets.

A benchmark figure means little without the machine, the versions and the exact command beside
it, so the report always carries them. The target sections restate the project's goals (issue 3:
against gunicorn; issue 17: against uWSGI and granian; issue 13: app threads) against the
measured figures; they judge nothing in tests (speed is never asserted), they only read the
tables for the reader.
"""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from benchmarks.disturbed import (
    GOAL_P99_RATIO,
    GOAL_SERVED_RATIO,
    UNANSWERED_SHARE,
    DisturbedResult,
    MemoryResult,
    MemorySample,
)
from benchmarks.probe import PATIENCE_S
from benchmarks.runner import Result, Sample, ScenarioResult, Settings
from benchmarks.scenarios import HELLO_THREADS, MAIN, THREADS, TRANSPORT
from benchmarks.servers import COMPARATORS, ROOT, uwsgi_executable
from forkserve.settings.registry import SETTINGS

# forkserve runs with its default keep-alive idle timeout (servers.py passes no --keep-alive).
KEEPALIVE_DEFAULT_S = float(SETTINGS["keepalive"].default)

SMOKE_NOTE = (
    "> **Smoke run** (1 s per run, 1 round): proves the runner works; the figures are too short "
    "to mean anything."
)
FIGURES_NOTE = (
    "- figures: median over rounds, per metric; CPU µs/req = server CPU (user+system, master and "
    "workers, from /proc) / requests completed; RSS / PSS = median worker VmRSS / Pss (shared "
    "pages divided among their sharers) after the run"
)
BASELINE = "gunicorn"
CANDIDATE = "forkserve"
# Issue 17: forkserve's req/s at least each comparator's on these workloads (scenario, clients,
# what the issue calls it), and its CPU per keep-alive request at most this.
VERSUS = (
    ("hello-keepalive-1perworker", 2, "keep-alive, 2 clients"),
    ("hello-c64", 64, "keep-alive, 64 clients"),
    ("hello-close", 8, "Connection: close, 8 clients"),
)
GOAL_KEEPALIVE_CPU_US = 40.0
# Issue 13: hello world with --threads 4 within this share of --threads 1's req/s.
GOAL_THREADS_SHARE = 0.85

def _latency(us: float) -> str:
    if math.isnan(us):
        return "n/a"
    if math.isinf(us):
        return "∞"
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"


def _number(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


# (column title, Sample attribute, formatter)
COLUMNS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("req/s", "requests_per_second", _number),
    ("p50", "p50_us", _latency),
    ("p99", "p99_us", _latency),
    ("max", "max_us", _latency),
    ("CPU µs/req", "cpu_us_per_request", _number),
    ("of which kernel", "kernel_us_per_request", _number),
    ("worker RSS MiB", "worker_rss_kib", lambda kib: _number(kib / 1024, 1)),
    ("worker PSS MiB", "worker_pss_kib", lambda kib: _number(kib / 1024, 1)),
    ("errors", "errors", _number),
    (f"new clients answered within {PATIENCE_S:g} s", "probes", _number),  # the whole sample: _cell
)
# Cells of columns that have no ratio.
NO_RATIO = ("errors", "workers", "probes")


def _probes(sample: Sample) -> str:
    """'12/12, ≤ 3.20 ms': newcomers answered of those sent, and the slowest answer."""
    text = f"{sample.probes_answered:.0f}/{sample.probes_sent:.0f}"
    if sample.probes_answered:
        text += f", ≤ {_latency(sample.probe_slowest_us)}"
    return text


def _cell(sample: Sample, attr: str, formatter: Callable[[float], str]) -> str:
    return _probes(sample) if attr == "probes" else formatter(getattr(sample, attr))


def _mib_cell(kib: float) -> str:
    return _number(kib / 1024, 1)


# The app-thread tables also show every worker's memory summed: what the threads save.
THREAD_COLUMNS = (*COLUMNS[:-2], ("workers", "workers", _number),
                  ("all workers RSS MiB", "total_rss_kib", _mib_cell),
                  ("all workers PSS MiB", "total_pss_kib", _mib_cell), *COLUMNS[-2:])


def ratio(candidate: float, baseline: float) -> float:
    """candidate / baseline, NaN when the baseline is zero or either is unknown."""
    if not baseline or math.isnan(baseline) or math.isnan(candidate) or math.isinf(baseline):
        return math.nan
    return candidate / baseline


def _ratio_text(value: float) -> str:
    if math.isinf(value):
        return "∞"
    return "n/a" if math.isnan(value) else f"{value:.2f}×"


# -- the environment ------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _forkserve_version() -> str:
    """The checkout's version and commit (what the servers actually ran), dirty-marked."""
    source = (ROOT / "forkserve" / "__init__.py").read_text()
    found = re.search(r'__version__ = "([^"]+)"', source)
    version = found.group(1) if found else "unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
            text=True, timeout=10, check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"{version} ({commit})" if commit else version


def _wrk_version(wrk: str) -> str:
    try:
        completed = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10,
                                   check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (completed.stdout or completed.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


def _uwsgi_version() -> str:
    """pip's uWSGI has metadata; a distribution's only answers ``uwsgi --version``."""
    version = _version("uWSGI")
    program = uwsgi_executable()
    if version != "not installed" or program is None:
        return version
    try:
        return subprocess.run([program, "--version"], capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


@dataclass(frozen=True)
class Environment:
    """Where and with what the benchmark ran."""

    cpu_model: str
    cpus: int
    usable_cpus: int
    kernel: str
    python: str
    h11: str
    gunicorn: str
    uwsgi: str
    granian: str
    forkserve: str
    wrk: str
    load_before: tuple[float, float, float]
    started: str

    @classmethod
    def capture(cls, wrk: str) -> Environment:
        return cls(
            cpu_model=_cpu_model(),
            cpus=os.cpu_count() or 0,
            usable_cpus=len(os.sched_getaffinity(0)),
            kernel=f"{platform.system()} {platform.release()}",
            python=platform.python_version(),
            h11=_version("h11"),
            gunicorn=_version("gunicorn"),
            uwsgi=_uwsgi_version(),
            granian=_version("granian"),
            forkserve=_forkserve_version(),
            wrk=_wrk_version(wrk),
            load_before=os.getloadavg(),
            started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        )


# -- the document ---------------------------------------------------------------------------


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def results_table(results: list[ScenarioResult],
                  columns: tuple[tuple[str, str, Callable[[float], str]], ...] = COLUMNS) -> list[str]:
    """Rows per scenario: each server's medians, then the ratio of the candidate (the first
    server) to each other server, per metric."""
    header = ["scenario", "clients", "server", *(title for title, _, _ in columns)]
    lines = [_row(header), "|" + "---|" * len(header)]
    for result in results:
        servers = result.servers
        medians = {name: result.median(name) for name in servers}
        for index, name in enumerate(servers):
            lead = [result.scenario.name, str(result.connections)] if index == 0 else ["", ""]
            cells = [_cell(medians[name], attr, formatter) for _, attr, formatter in columns]
            lines.append(_row([*lead, name, *cells]))
        for other in servers[1:]:
            cells = [
                "" if attr in NO_RATIO else _ratio_text(
                    ratio(getattr(medians[servers[0]], attr), getattr(medians[other], attr))
                )
                for _, attr, _ in columns
            ]
            lines.append(_row(["", "", f"**{servers[0]}/{other}**", *cells]))
    return lines


def _find(results: list[ScenarioResult], name: str) -> ScenarioResult | None:
    return next((result for result in results if result.scenario.name == name), None)


def _pair(result: ScenarioResult) -> tuple[Sample, Sample] | None:
    if CANDIDATE not in result.samples or BASELINE not in result.samples:
        return None
    return result.median(CANDIDATE), result.median(BASELINE)


def targets_table(results: list[ScenarioResult]) -> list[str]:
    """Issue 3's targets beside what this run measured (a reading aid, not a test)."""
    rows: list[tuple[str, str, str]] = []

    def throughput(name: str, goal: float, label: str) -> None:
        result = _find(results, name)
        pair = _pair(result) if result else None
        if pair is None:
            rows.append((label, "not run", "—"))
            return
        value = ratio(pair[0].requests_per_second, pair[1].requests_per_second)
        rows.append((label, _ratio_text(value), _verdict(value >= goal)))

    throughput("hello-close", 1.5, "req/s ≥ 1.5× gunicorn, hello, Connection: close")
    throughput("hello-keepalive-1perworker", 2.5,
               "req/s ≥ 2.5× gunicorn, hello keep-alive, one client per worker")
    result = _find(results, "hello-keepalive")
    pair = _pair(result) if result else None
    if pair:
        rows.append((("(reading aid, no target) req/s vs gunicorn, hello keep-alive, more clients "
                     "than workers"), _ratio_text(ratio(pair[0].requests_per_second,
                                                       pair[1].requests_per_second)), "—"))
    for name in ("hello-keepalive", "hello-c64"):
        result = _find(results, name)
        if result and CANDIDATE in result.samples:
            slowest = max(sample.max_us for sample in result.samples[CANDIDATE])
            rows.append((
                (f"more clients than workers ({name}): slowest request, over all rounds, within "
                f"the keep-alive idle timeout ({KEEPALIVE_DEFAULT_S:g} s)"),
                _latency(slowest), _verdict(slowest <= KEEPALIVE_DEFAULT_S * 1e6),
            ))
    for name in ("hello-keepalive", "hello-keepalive-1perworker"):
        result = _find(results, name)
        if result and CANDIDATE in result.samples:
            cpu = result.median(CANDIDATE).cpu_us_per_request
            rows.append((f"forkserve CPU ≤ 120 µs per request ({name})", f"{_number(cpu)} µs",
                         _verdict(cpu <= 120)))
    result = _find(results, "hello-c64")
    pair = _pair(result) if result else None
    if pair:
        rows.append((
            "p99 at -c 64 no worse than gunicorn's",
            f"{_latency(pair[0].p99_us)} vs {_latency(pair[1].p99_us)}",
            _verdict(pair[0].p99_us <= pair[1].p99_us),
        ))
    for label, attribute in (("RSS", "worker_rss_kib"), ("PSS", "worker_pss_kib")):
        memory = []
        for result in results:
            pair = _pair(result)
            value = ratio(getattr(pair[0], attribute), getattr(pair[1], attribute)) if pair else math.nan
            if not math.isnan(value):
                memory.append((value, result.scenario.name))
        if memory:
            value, name = max(memory)
            rows.append((f"worker {label} no larger than gunicorn's (largest ratio: {name})",
                         _ratio_text(value), _verdict(value <= 1.0)))
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines += [f"| {label} | {measured} | {met} |" for label, measured, met in rows]
    return lines


def _verdict(met: bool) -> str:
    return "yes" if met else "**no**"


def _errors_notes(results: list[ScenarioResult]) -> list[str]:
    """wrk's errors by kind per server, and the workers replaced during a run."""
    notes = [f"- {note}" for result in results for note in result.notes]
    for result in results:
        for name in result.servers:
            kinds = result.error_kinds.get(name, {})
            total = sum(kinds.values())
            if total:
                detail = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()) if count)
                notes.append(f"- {result.scenario.name} / {name}: {total} errors over "
                             f"{len(result.samples[name])} run(s): {detail} (status = non-2xx/3xx answers)")
    return notes


def _target_lines(rows: list[tuple[str, str, str]]) -> list[str]:
    lines = ["| target | measured | met |", "|---|---|---|"]
    return lines + [f"| {label} | {measured} | {met} |" for label, measured, met in rows]


def _versus(ours: Sample, theirs: Sample) -> tuple[float, str]:
    """forkserve's req/s over another server's, and the text '1.20× (24,000 vs 20,000)'."""
    value = ratio(ours.requests_per_second, theirs.requests_per_second)
    return value, (f"{_ratio_text(value)} ({_number(ours.requests_per_second)} vs "
                   f"{_number(theirs.requests_per_second)})")


# -- issue 17: uWSGI and granian ------------------------------------------------------------


def versus_table(results: list[ScenarioResult], left_out: list[str]) -> list[str]:
    """Issue 17's goals: forkserve's req/s at least uWSGI's and granian's on three workloads,
    and its CPU per keep-alive request at most 40 µs (a reading aid, not a test)."""
    skipped = dict(note.split(": ", 1) for note in left_out if ": " in note)
    rows: list[tuple[str, str, str]] = []
    for name, clients, what in VERSUS:
        result = _find(results, name)
        others = [kind.name for kind in COMPARATORS]  # (and any labelled variant the scenario ran)
        others += [server for server in (result.servers if result else []) if server not in (CANDIDATE, BASELINE, *others)]
        for other in others:
            label = f"req/s ≥ {other}'s, hello, {what} ({name})"
            kind_name = other.split(" ", 1)[0]
            if result is None or CANDIDATE not in result.samples:
                rows.append((label, "not run", "—"))
            elif other not in result.samples:
                rows.append((label, f"not run ({skipped.get(kind_name, 'not in this run')})", "—"))
            else:
                theirs = result.median(other)
                value, measured = _versus(result.median(CANDIDATE), theirs)
                if theirs.probes_answered < theirs.probes_sent:
                    measured += (f"; {other} answered {_probes(theirs)} new clients within "
                                 f"{PATIENCE_S:g} s (its figures are those of the clients it served)")
                if result.connections == clients:
                    rows.append((label, measured, _verdict(value >= 1.0)))
                else:
                    rows.append((label, f"{measured}, but at {result.connections} clients", "—"))
    for name, _, _ in VERSUS[:2]:
        result = _find(results, name)
        if result is None or CANDIDATE not in result.samples:
            continue
        cpu = result.median(CANDIDATE).cpu_us_per_request
        rows.append(((f"forkserve CPU ≤ {GOAL_KEEPALIVE_CPU_US:g} µs per keep-alive request ({name}, "
                     f"{result.connections} clients)"), f"{_number(cpu)} µs",
                     _verdict(cpu <= GOAL_KEEPALIVE_CPU_US)))
    for name, _, what in VERSUS:
        result = _find(results, name)
        if result is not None:
            figures = ", ".join(f"{server} {_number(result.median(server).cpu_us_per_request)}"
                                for server in result.servers)
            rows.append((f"(reading aid) CPU µs per request, {what} ({name})", figures, "—"))
            newcomers = ", ".join(f"{server} {_probes(result.median(server))}" for server in result.servers)
            rows.append((f"(reading aid) new clients answered within {PATIENCE_S:g} s, {what} ({name})",
                         newcomers, "—"))
    return _target_lines(rows)


# -- issue 13: app threads ------------------------------------------------------------------


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.1f} MiB"


def _pair_of(results: list[ScenarioResult], name: str) -> tuple[str, Sample, str, Sample] | None:
    """(candidate label, its medians, other label, its medians) of a two-server scenario."""
    result = _find(results, name)
    if result is None or len(result.servers) != 2:
        return None
    first, second = result.servers
    return first, result.median(first), second, result.median(second)


def threads_targets(results: list[ScenarioResult]) -> list[str]:
    """Issue 13's goals for app threads, and what 8 threads save against 8 times the workers."""
    rows: list[tuple[str, str, str]] = []
    pair = _pair_of(results, "io-bound")
    if pair:
        _, ours, other, theirs = pair
        value, measured = _versus(ours, theirs)
        rows += [
            (f"io-bound: req/s ≥ {other}'s", measured, _verdict(value >= 1.0)),
            (f"io-bound: p99 ≤ {other}'s", f"{_latency(ours.p99_us)} vs {_latency(theirs.p99_us)}",
             _verdict(ours.p99_us <= theirs.p99_us)),
            (f"io-bound: worker RSS ≤ {other}'s (median worker)",
             f"{_mib(ours.worker_rss_kib)} vs {_mib(theirs.worker_rss_kib)}",
             _verdict(ours.worker_rss_kib <= theirs.worker_rss_kib)),
            (f"(reading aid) io-bound: worker PSS vs {other}'s (median worker)",
             f"{_mib(ours.worker_pss_kib)} vs {_mib(theirs.worker_pss_kib)}", "—"),
        ]
    for name in ("hello-threads4-keepalive", "hello-threads4-close"):
        pair = _pair_of(results, name)
        result = _find(results, name)
        if pair is None or result is None:
            continue
        _, four, _, one = pair
        value, measured = _versus(four, one)
        clients = result.connections
        rows += [
            ((f"{name}: req/s with --threads {HELLO_THREADS} within {1 - GOAL_THREADS_SHARE:.0%} of "
             f"--threads 1 ({clients} clients)"), measured, _verdict(value >= GOAL_THREADS_SHARE)),
            (f"(reading aid) {name}: CPU µs per request, --threads {HELLO_THREADS} vs 1",
             (f"{_number(four.cpu_us_per_request)} vs {_number(one.cpu_us_per_request)} "
             f"({_ratio_text(ratio(four.cpu_us_per_request, one.cpu_us_per_request))})"), "—"),
        ]
    pair = _pair_of(results, "io-bound-16sync")
    if pair:
        threaded, ours, many, theirs = pair
        for title, attr in (("RSS", "total_rss_kib"), ("PSS", "total_pss_kib")):
            mine, others = getattr(ours, attr), getattr(theirs, attr)
            rows.append((f"(reading aid) memory saved: all workers' {title}, {threaded} vs {many}",
                         (f"{_mib(mine)} vs {_mib(others)}: {_mib(others - mine)} saved "
                         f"({_number(ratio(others - mine, others) * 100)} %)"), "—"))
        rows.append((f"(reading aid) io-bound req/s, {threaded} vs {many}", _versus(ours, theirs)[1], "—"))
    return _target_lines(rows)


THREADS_NOTE = (
    "Each scenario carries its own servers (the candidate first; ratios are it over the other). "
    "\"all workers\" sums every live worker's RSS or PSS after the run: what the machine pays for "
    "that many workers. The PSS sum is the one to read: RSS counts in every worker the pages it "
    "shares with its master."
)


TLS_NOTE = (
    "Both servers terminate TLS themselves with the same certificate (ECDSA P-256, made for the "
    "run) and Python's ssl module; wrk verifies nothing and negotiates TLS 1.3. Keep-alive measures "
    "the record layer; Connection: close pays a full handshake per request."
)


def render(results: list[Result], settings: Settings, environment: Environment,
           command: str, smoke: bool, elapsed_s: float, left_out: list[str] | None = None) -> str:
    """The whole Markdown document. ``left_out`` says which optional comparators did not run
    and why ("uwsgi: skipped, ...")."""
    left_out = left_out or []
    plain = [result for result in results if isinstance(result, ScenarioResult)]
    main = [result for result in plain if result.scenario.section == MAIN]
    threads = [result for result in plain if result.scenario.section == THREADS]
    transport = [result for result in plain if result.scenario.section == TRANSPORT]
    disturbed = [result for result in results if isinstance(result, DisturbedResult)]
    memory = [result for result in results if isinstance(result, MemoryResult)]
    ran = sorted({name for result in main for name in result.servers} - {CANDIDATE, BASELINE})
    load_after = os.getloadavg()
    env = environment
    lines = [
        "# forkserve side by side — gunicorn, uWSGI, granian",
        "",
    ]
    if smoke:
        lines += [SMOKE_NOTE, ""]
    lines += [
        f"- command: `{command}`",
        f"- started: {env.started}; took {elapsed_s:.0f} s",
        f"- machine: {env.cpu_model}, {env.cpus} CPUs ({env.usable_cpus} usable), {env.kernel}",
        "- load average (1/5/15 min) before: "
        + "/".join(f"{x:.2f}" for x in env.load_before)
        + ", after: " + "/".join(f"{x:.2f}" for x in load_after),
        (f"- versions: Python {env.python}, h11 {env.h11}, gunicorn {env.gunicorn}, uWSGI {env.uwsgi}, "
         f"granian {env.granian}, forkserve {env.forkserve}, {env.wrk}"),
        (f"- settings: {settings.workers} workers each (gunicorn: sync worker; uWSGI: --http11-socket "
         f"--master; granian: --interface wsgi) unless a scenario says otherwise; wrk 1 thread, "
         f"--connections {settings.connections}, {settings.duration_s} s per run, {settings.rounds} "
         f"round(s) alternating servers, {settings.warmup_s} s warm-up per server started"),
        f"- optional comparators run: {', '.join(ran) or 'none'}" + "".join(f"; {note}" for note in left_out),
        FIGURES_NOTE,
        "",
    ]
    if main:
        lines += ["## Results", "", *results_table(main), ""]
        notes = _errors_notes(main)
        if notes:
            lines += ["Errors and replaced workers seen:", "", *notes, ""]
        lines += ["## Targets (issue 3)", "", *targets_table(main), ""]
        lines += ["## vs uWSGI and granian (issue 17)", "", *versus_table(main, left_out), ""]
    if threads:
        lines += _own_servers_section("## App threads (issue 13)", THREADS_NOTE, threads)
        lines += ["### Targets (issue 13)", "", *threads_targets(threads), ""]
    if transport:
        lines += _own_servers_section("## TLS in the server (issue 14)", TLS_NOTE, transport)
    if disturbed:
        lines += [f"## Misbehaving clients (each server against its own baseline, {CANDIDATE}'s goals)",
                  "", *disturbed_section(disturbed), ""]
    if memory:
        lines += ["## Memory per idle keep-alive connection", "", *memory_section(memory), ""]
    lines += ["## Scenarios", "", *map(_scenario_line, results)]
    return "\n".join(lines) + "\n"


def _own_servers_section(heading: str, note: str, results: list[ScenarioResult]) -> list[str]:
    """A section of scenarios that carry their own servers: the table, then any errors seen."""
    lines = [heading, "", note, "", *results_table(results, THREAD_COLUMNS), ""]
    notes = _errors_notes(results)
    if notes:
        lines += ["Errors and replaced workers seen:", "", *notes, ""]
    return lines


def _scenario_line(result: Result) -> str:
    """What the scenario is, the other names it answers to, and each server's arguments."""
    scenario = result.scenario
    line = f"- **{scenario.name}**: {scenario.about} (`{scenario.app}` `{scenario.path}`)"
    if scenario.aliases:
        line += f"; also selected as {', '.join(f'`{alias}`' for alias in scenario.aliases)}"
    if isinstance(result, ScenarioResult) and result.commands:
        line += "; servers: " + ", ".join(
            f"`{command}`" if command.startswith(f"{label} ") else f"{label} = `{command}`"
            for label, command in result.commands.items())
    return line


DISTURBED_NOTE = (
    f"Each server runs the hello keep-alive load alone (its baseline) and beside the scenario's "
    f"misbehaving clients; \"served\" counts 2xx/3xx answers. \"unanswered\" counts requests wrk "
    f"wrote that got neither an answer nor an error by the end (a healthy run leaves about one per "
    f"wrk connection in flight); above {UNANSWERED_SHARE:.0%} of the requests sent, the p99 is shown "
    f"as ∞: wrk's percentiles see only the requests that were answered. Goals, marked for "
    f"{CANDIDATE} only: served req/s ≥ {GOAL_SERVED_RATIO:g}× its baseline and p99 ≤ "
    f"{GOAL_P99_RATIO:g}× its baseline."
)


def disturbed_section(results: list[DisturbedResult]) -> list[str]:
    """The table of served req/s and p99 with and without the misbehaving clients, per server,
    as ratios to that server's own baseline, then what happened to those clients."""
    header = ["scenario", "server", "served req/s alone", "served with the clients", "served ratio",
              f"≥ {GOAL_SERVED_RATIO:g}×", "p99 alone", "p99 with the clients", "p99 ratio",
              f"≤ {GOAL_P99_RATIO:g}×", "unanswered / sent", "errors"]
    lines = [DISTURBED_NOTE, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes: list[str] = []
    for result in results:
        for index, name in enumerate(result.baseline):
            alone, disturbed = result.medians(name)
            served = ratio(disturbed.served_per_second, alone.served_per_second)
            p99 = math.inf if math.isinf(disturbed.p99_us) else ratio(disturbed.p99_us, alone.p99_us)
            judged = name == CANDIDATE
            lines.append("| " + " | ".join([
                result.scenario.name if index == 0 else "", name,
                _number(alone.served_per_second), _number(disturbed.served_per_second), _ratio_text(served),
                _verdict(served >= GOAL_SERVED_RATIO) if judged else "—",
                _latency(alone.p99_us), _latency(disturbed.p99_us), _ratio_text(p99),
                _verdict(p99 <= GOAL_P99_RATIO) if judged else "—",
                f"{disturbed.unanswered:,.0f} / {disturbed.sent:,.0f}", _number(disturbed.errors),
            ]) + " |")
            rounds = result.clients.get(name, [])
            if result.open_at_end.get(name):
                still = statistics.median(result.open_at_end[name])
                notes.append(f"- {result.scenario.name} / {name}: {still:,.0f} of "
                             f"{result.scenario.extra_clients:,} idle connections still open at the end "
                             f"(median over rounds)")
            if rounds:
                notes.append(f"- {result.scenario.name} / {name}, the clients in round 1: {rounds[0]}")
    return [*lines, "", *notes]


MEANINGFUL_SHARE = 0.9  # of the connections that must still be open for a per-connection figure


MEMORY_NOTE = (
    "One worker per server; its RSS after a warm-up, then with the idle connections open (each "
    "sent one request and read the answer). The per-connection figure means something only when "
    f"the worker still holds the connections: it is given when at least {MEANINGFUL_SHARE:.0%} of "
    "them are still open."
)
MEMORY_HEADER = ("| scenario | server | connections | still open | worker RSS before | with them | "
                 "growth | KiB per open connection |")


def memory_section(results: list[MemoryResult]) -> list[str]:
    """Worker RSS growth per idle connection, per server, with a word on whether it means anything."""
    lines = [MEMORY_NOTE, "", MEMORY_HEADER, "|" + "---|" * 8]
    notes: list[str] = []
    for result in results:
        for index, name in enumerate(result.samples):
            sample = result.median(name)
            meaningful = sample.open_at_end >= MEANINGFUL_SHARE * sample.connections
            per_connection = sample.growth_kib / sample.open_at_end if meaningful else math.nan
            lines.append("| " + " | ".join([
                result.scenario.name if index == 0 else "", name, _number(sample.connections),
                _number(sample.open_at_end), f"{sample.rss_before_kib / 1024:.1f} MiB",
                f"{sample.rss_after_kib / 1024:.1f} MiB", f"{sample.growth_kib:,.0f} KiB",
                _number(per_connection, 1),
            ]) + " |")
            if not meaningful:
                notes.append(f"- {name}: no per-connection figure: {_why_not_held(name, sample)}")
    return [*lines, "", *notes]


def _why_not_held(name: str, sample: MemorySample) -> str:
    if name == BASELINE:
        return ("gunicorn's sync worker closes every connection after its response, so an idle "
                "keep-alive connection costs its worker nothing; the growth shown is noise")
    closed = sample.connections - sample.open_at_end
    return (f"the worker closed {closed:,.0f} of the {sample.connections:,.0f} connections (one "
            "connection per worker: an idle one is closed as soon as another waits), so the growth "
            "shown is not memory held per connection")
