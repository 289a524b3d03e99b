"""``python -m benchmarks``: parse the options, run, print (and optionally save) the report."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import report, runner
from benchmarks.apps.bench_apps import ensure_download_file
from benchmarks.disturbed import RecoveryError
from benchmarks.scenarios import SCENARIOS, select
from benchmarks.servers import COMPARATORS, ServerError, comparators
from benchmarks.slowclients import raise_fd_limit
from benchmarks.transports import CertificateError
from benchmarks.wrk import WrkError, find_wrk

SMOKE = runner.Settings(workers=2, connections=8, duration_s=1, rounds=1, warmup_s=0, parallel=True)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def parser() -> argparse.ArgumentParser:
    defaults = runner.Settings()
    names = ", ".join(scenario.name for scenario in SCENARIOS)
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run forkserve, gunicorn, and uWSGI and granian when installed, side by side under "
                    "wrk and print a Markdown table of req/s, latency, server CPU per request and worker "
                    "memory.",
    )
    p.add_argument("--workers", type=_positive, default=defaults.workers,
                   help=f"worker processes for each server (default {defaults.workers})")
    p.add_argument("--connections", type=_positive, default=defaults.connections,
                   help=f"wrk -c for the scenarios that use the default (default {defaults.connections})")
    p.add_argument("--duration", type=_positive, default=defaults.duration_s,
                   help=f"seconds per wrk run (default {defaults.duration_s})")
    p.add_argument("--rounds", type=_positive, default=defaults.rounds,
                   help=f"runs per server per scenario, alternating servers (default {defaults.rounds})")
    p.add_argument("--warmup", type=_not_negative, default=defaults.warmup_s,
                   help=f"seconds of unmeasured load per server and app first (default {defaults.warmup_s})")
    p.add_argument("--scenario", action="append", metavar="NAME",
                   help=f"run only this scenario (repeatable); one of: {names}")
    optional = ",".join(kind.name for kind in COMPARATORS)
    p.add_argument("--with", dest="with_", type=_names, action="extend", metavar="NAMES", default=[],
                   help=f"comma-separated optional comparators that must run ({optional}): an error if "
                        "one is not installed (by default each runs when installed)")
    p.add_argument("--without", type=_names, action="extend", metavar="NAMES", default=[],
                   help="comma-separated optional comparators to leave out even when installed")
    p.add_argument("--smoke", action="store_true",
                   help="every scenario once for 1 s with no warm-up, the servers of a scenario driven "
                        "at the same time (overrides --duration, --rounds and --warmup): proves the "
                        "runner works, measures nothing")
    p.add_argument("--output", type=Path, metavar="FILE", help="also write the Markdown report here")
    return p


def _on_term(signum: int, frame: Any) -> None:
    # Turn TERM into an exception so every `finally` runs and the servers are stopped.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    arguments = argv if argv is not None else sys.argv[1:]
    options = parser().parse_args(arguments)
    if options.smoke:
        settings = replace(SMOKE, workers=options.workers, connections=options.connections)
    else:
        settings = runner.Settings(
            workers=options.workers, connections=options.connections, duration_s=options.duration,
            rounds=options.rounds, warmup_s=options.warmup,
        )
    try:
        scenarios = select(options.scenario)
        wrk = find_wrk()
        kinds, left_out = comparators(options.with_, options.without)
    except (ValueError, WrkError, ServerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_term)
    # Hundreds of client sockets here; the servers inherit the limit for as many on their side.
    raise_fd_limit()
    ensure_download_file()
    environment = report.Environment.capture(wrk)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    for note in left_out:
        progress(f"note: {note}")
    try:
        results = runner.run(scenarios, settings, kinds, progress=progress)
    except (ServerError, WrkError, RecoveryError, CertificateError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    command = shlex.join(["python", "-m", "benchmarks", *arguments])
    document = report.render(results, settings, environment, command, options.smoke,
                             time.monotonic() - started, left_out)
    sys.stdout.write(document)
    if options.output:
        try:
            options.output.write_text(document)
        except OSError as error:
            print(f"error: cannot write {os.fspath(options.output)}: {error.strerror or error}",
                  file=sys.stderr)
            return 1
        progress(f"report written to {os.fspath(options.output)}")
    return 0
