"""The sizing sheet: what one forkserve worker, and one core, serve — per app, per thread count.

    python -m benchmarks.sizing                       # every workload, threads 1 and 4: ~4 min
    python -m benchmarks.sizing --output benchmarks/SIZING.md
    python -m benchmarks.sizing --smoke               # hello only, 1 s runs: proves it works

README "Sizing a fleet" turns these figures into hosts x workers x threads. Method: forkserve
with one worker (``--threads T``) pinned to CPU 0, wrk (one thread, keep-alive, 2 x T
connections so the worker always has a request waiting) pinned to CPU 1, so the worker has a
core to itself and the client never takes from it. Per run: the worker's req/s; server CPU per
request (master and worker, user + system, from /proc), hence the req/s one fully busy core
gives (1e6 / CPU µs); how busy the worker kept its core (CPU seconds / wall seconds: below 100%
means it waited, and more workers or threads per core pay off); latency; the worker's RSS and
PSS after the run. Each figure is the median of ``--rounds`` runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procstat import tree_cpu_seconds
from benchmarks.runner import Sample, measure, median_sample
from benchmarks.scenarios import DEMO_APP, HELLO_APP, Scenario
from benchmarks.servers import FORKSERVE, READY_TIMEOUT, Launch, RunningServer, ServerError
from benchmarks.wrk import WrkError, find_wrk, run_wrk

DJANGO_APP = "benchmarks.apps.django_site:application"
WORKLOADS = (
    Scenario("hello", "hello world (the server alone)", HELLO_APP, "/"),
    Scenario("demo-json", "the demo app's JSON view", DEMO_APP, "/json"),
    Scenario("django-page", "a Django page: routing, 3 middlewares, a template with 20 rows", DJANGO_APP, "/"),
    Scenario("django-wait", "the same Django page after a 20 ms wait (a query, an API call)", DJANGO_APP,
             "/wait"),
)
SERVER_CPU, CLIENT_CPU = 0, 1


@dataclass(frozen=True)
class Row:
    """One workload at one thread count: the median sample and how busy the core was."""

    workload: Scenario
    threads: int
    connections: int
    sample: Sample
    busy: float  # the worker's CPU seconds per wall second (1.0: a full core)


def pin(pids: list[int], cpu: int) -> None:
    """Run these processes on one CPU only (the master's future workers inherit it)."""
    for pid in pids:
        try:
            os.sched_setaffinity(pid, {cpu})
        except OSError:
            continue


def measure_row(workload: Scenario, threads: int, duration: int, rounds: int, warmup: int, wrk: str,
                workdir: Path) -> Row:
    """Start forkserve (1 worker, ``threads``), pin it, warm it up, measure ``rounds`` runs."""
    server = RunningServer(Launch(FORKSERVE, workload.app, 1, ("--threads", str(threads))), workdir)
    connections = 2 * threads
    try:
        server.wait_ready(time.monotonic() + READY_TIMEOUT)
        pin([server.pid, *server.worker_pids()], SERVER_CPU)
        if warmup:
            run_wrk(wrk, server.url + workload.path, connections, warmup, workload.timeout, ())
        samples, busy = [], []
        for _ in range(rounds):
            cpu_before, started = tree_cpu_seconds(server.pid), time.monotonic()
            sample, _, _ = measure(server, workload, connections, duration, wrk)
            busy.append((tree_cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - started))
            samples.append(sample)
    finally:
        server.stop()
    return Row(workload, threads, connections, median_sample(samples), statistics.median(busy))


def threads_effective(rows: list[Row]) -> str:
    """Whether --threads changed anything where it should: the waiting view's req/s."""
    waiting = {row.threads: row.sample.requests_per_second for row in rows if row.workload.name == "django-wait"}
    if len(waiting) < 2 or 1 not in waiting:
        return "not measured (needs django-wait at threads 1 and more)"
    most = max(waiting)
    ratio = waiting[most] / waiting[1] if waiting[1] else 0.0
    verdict = "threads work" if ratio >= 1.5 else "**no effect: --threads did nothing in this build**"
    return f"django-wait at {most} threads: {ratio:.2f}x the req/s of 1 thread ({verdict})"


def report(rows: list[Row], command: str, took: float, settings: str) -> str:
    """The Markdown sizing sheet."""
    load = os.getloadavg()
    lines = [
        "# forkserve sizing sheet: one worker, one core",
        "",
        f"- command: `{command}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; took {took:.0f} s",
        (f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python "
        f"{platform.python_version()}; load average after: {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}"),
        f"- settings: {settings}",
        ("- method: 1 worker pinned to CPU 0, wrk (1 thread, keep-alive, 2 x threads connections) pinned to "
        "CPU 1; median of the rounds per figure"),
        "",
        ("| workload | threads | clients | req/s per worker | CPU µs/req | req/s per busy core | core busy "
        "| p50 | p99 | worker RSS MiB | worker PSS MiB |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        sample = row.sample
        per_core = 1e6 / sample.cpu_us_per_request if sample.cpu_us_per_request else 0.0
        lines.append(
            f"| {row.workload.name} | {row.threads} | {row.connections} | {sample.requests_per_second:,.0f} "
            f"| {sample.cpu_us_per_request:,.0f} | {per_core:,.0f} | {row.busy:.0%} "
            f"| {sample.p50_us / 1000:.2f} ms | {sample.p99_us / 1000:.2f} ms "
            f"| {sample.worker_rss_kib / 1024:.1f} | {sample.worker_pss_kib / 1024:.1f} |")
    lines += ["", f"Threads: {threads_effective(rows)}.", "", "## Workloads", ""]
    lines += [f"- **{item.name}**: {item.about} (`{item.app}` `{item.path}`)" for item in WORKLOADS]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sizing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", action="append", choices=[item.name for item in WORKLOADS],
                        help="measure only these (repeatable; default: all)")
    parser.add_argument("--threads", action="append", type=int, help="thread counts (repeatable; default 1 and 4)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per run (8)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per figure (3)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load first (2)")
    parser.add_argument("--smoke", action="store_true", help="hello only, 1 thread, one 1 s run")
    parser.add_argument("--output", type=Path, help="also write the report here")
    options = parser.parse_args(argv)
    if options.smoke:
        options.workload = options.workload or ["hello"]
        options.threads = options.threads or [1]
        options.duration, options.rounds, options.warmup = 1, 1, 0
    chosen = [item for item in WORKLOADS if not options.workload or item.name in options.workload]
    thread_counts = options.threads or [1, 4]
    if (os.cpu_count() or 1) < 2:
        print("the sizing sheet needs 2 CPUs (one for the worker, one for wrk)", file=sys.stderr)
        return 2
    try:
        wrk = find_wrk()
    except WrkError as error:
        print(error, file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {CLIENT_CPU})  # this process and the wrk it starts keep off CPU 0
    began = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="forkserve-sizing-") as workdir:
        for workload in chosen:
            for threads in thread_counts:
                print(f"measuring {workload.name}, {threads} thread(s)", file=sys.stderr, flush=True)
                try:
                    rows.append(measure_row(workload, threads, options.duration, options.rounds, options.warmup,
                                            wrk, Path(workdir)))
                except (ServerError, WrkError) as error:
                    print(f"error: {error}", file=sys.stderr)
                    return 1
    settings = (f"{options.duration} s per run, {options.rounds} round(s), {options.warmup} s warm-up, "
                f"threads {' '.join(map(str, thread_counts))}")
    command = "python -m benchmarks.sizing " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(rows, command.strip(), time.monotonic() - began, settings)
    sys.stdout.write(text)
    if options.output:
        options.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
