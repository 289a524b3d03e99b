"""``python -m benchmarks.chaos``: run the scenarios, print a table and a verdict.

Exit status 0 when every scenario passed, 1 when one did not, 2 for bad options, 130 on
Ctrl-C. Progress goes to stderr, the Markdown report to stdout (and to ``--output``).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.apps.bench_apps import ensure_download_file
from benchmarks.chaos.load import LOSS_KINDS
from benchmarks.chaos.scenarios import DISTURBANCES, Outcome, Settings, run_scenario
from benchmarks.report import Environment
from benchmarks.servers import ServerError
from benchmarks.slowclients import raise_fd_limit, tally
from benchmarks.transports import TRANSPORTS, UWSGI, CertificateError

NAMES = tuple(DISTURBANCES)


def parser() -> argparse.ArgumentParser:
    defaults = Settings()
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.chaos",
        description="Disturb a real forkserve (-w 4) under a load of checked requests, one disturbance "
                    "per scenario, and report every request that did not get its correct answer.",
    )
    p.add_argument("--scenario", action="append", metavar="NAME", choices=NAMES,
                   help=f"run only this scenario (repeatable); one of: {', '.join(NAMES)}")
    p.add_argument("--duration", type=float, default=defaults.duration_s, metavar="S",
                   help=f"seconds of load per scenario (default {defaults.duration_s:g})")
    p.add_argument("--threads", type=int, default=defaults.threads, metavar="N",
                   help=f"client threads (default {defaults.threads})")
    p.add_argument("--request-timeout", type=float, default=defaults.request_timeout, metavar="S",
                   help=f"seconds a request may take before it counts as lost (default "
                        f"{defaults.request_timeout:g})")
    p.add_argument("--stalled", type=int, default=defaults.stalled, metavar="N",
                   help=f"stalled half-head clients in stalled-clients (default {defaults.stalled})")
    p.add_argument("--slow-readers", type=int, default=defaults.slow_readers, metavar="N",
                   help=f"slow readers in slow-readers (default {defaults.slow_readers})")
    p.add_argument("--server-args", default="", metavar="ARGS",
                   help='extra forkserve arguments for every scenario, e.g. --server-args="--threads 4"')
    p.add_argument("--transport", choices=TRANSPORTS, default=defaults.transport,
                   help="what the clients speak, and forkserve serves: plain HTTP, TLS (a certificate made "
                        "for the run), HTTP after a PROXY v1 header (--proxy-protocol v1) or nginx's uwsgi "
                        f"packets (--protocol uwsgi) (default {defaults.transport})")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the clients' choices")
    p.add_argument("--output", type=Path, metavar="FILE", help="also write the Markdown report here")
    return p


def _on_term(signum: int, frame: Any) -> None:
    # TERM becomes an exception so every `finally` runs: servers and clients are stopped.
    raise SystemExit(128 + signum)


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f} ms"


HEADER = ["scenario", "sent", "ok", "lost", *LOSS_KINDS, "killed in flight", "refused",
          "no connection", "handshake failed", "p50", "p99", "max", "verdict"]


def table(outcomes: list[Outcome]) -> list[str]:
    """One row per scenario, the losses by kind, then each scenario's notes."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    notes = []
    for outcome in outcomes:
        summary = outcome.summary
        lost = summary.lost_total - outcome.excused
        lines.append("| " + " | ".join([
            outcome.name, f"{summary.sent:,}", f"{summary.ok:,}", f"{lost:,}",
            *(f"{summary.lost[kind]:,}" for kind in LOSS_KINDS), str(outcome.excused),
            f"{summary.refused:,}", f"{summary.no_connection:,}", f"{summary.handshake_failed:,}",
            _ms(summary.p50_ms), _ms(summary.p99_ms),
            _ms(summary.max_ms),
            "pass" if outcome.passed else "**FAIL**",
        ]) + " |")
        details = [*outcome.notes]
        if outcome.refused_expected:
            details.append(f"{outcome.refused_expected:,} connection(s) refused, not made or not set up after "
                           f"TERM (expected: the server was going away)")
        if outcome.unexpected_refusals:
            details.append(f"{outcome.unexpected_refusals:,} connection(s) refused or not made while the "
                           f"server should have been listening")
        details.append(f"{outcome.served_after:,} correct answers after the disturbance")
        if outcome.error:
            details.append(f"error: {outcome.error}")
        notes.append(f"- **{outcome.name}**: " + "; ".join(details))
    return [*lines, "", *notes]


def verdict(outcomes: list[Outcome]) -> str:
    failed = [outcome.name for outcome in outcomes if not outcome.passed]
    sent = sum(outcome.summary.sent for outcome in outcomes)
    lost = sum(outcome.summary.lost_total - outcome.excused for outcome in outcomes)
    if not failed:
        return (f"**Verdict: PASS** — {len(outcomes)} scenario(s), {sent:,} requests sent, every one "
                f"answered correctly (SIGKILL: the requests the killed worker had in its hands excused where they broke).")
    kinds = sum((outcome.summary.lost for outcome in outcomes), start=type(outcomes[0].summary.lost)())
    return (f"**Verdict: FAIL** — {len(failed)} of {len(outcomes)} scenario(s) failed "
            f"({', '.join(failed)}); {lost:,} of {sent:,} requests lost{tally(kinds, ': ')}.")


TRANSPORT_NOTES = {
    "http": "http (plain HTTP/1.1)",
    "tls": "tls (forkserve --certfile/--keyfile with a self-signed ECDSA P-256 certificate made for the run; "
           "clients verify it; stalled clients: half a ClientHello, or half a head after the handshake)",
    "proxy": "proxy (forkserve --proxy-protocol v1; every connection starts with a PROXY TCP4/TCP6 header "
             "naming a made-up client, whose address the app must see as REMOTE_ADDR; stalled clients: half "
             "the header, or half a head after it)",
    "uwsgi": "uwsgi (forkserve --protocol uwsgi; a uwsgi packet with a made-up REMOTE_ADDR the app must see, "
             "then the body; the answer is HTTP/1.1, then close; stalled clients: half a packet)",
}


def render(outcomes: list[Outcome], settings: Settings, environment: Environment, command: str,
           elapsed_s: float) -> str:
    env = environment
    mix = ("every connection one request (uwsgi has no keep-alive)" if settings.transport == UWSGI
           else "half close-per-request, half keep-alive runs of 2-20")
    lines = [
        "# forkserve chaos suite",
        "",
        f"- command: `{command}`",
        f"- started: {env.started}; took {elapsed_s:.0f} s",
        f"- machine: {env.cpu_model}, {env.cpus} CPUs ({env.usable_cpus} usable), {env.kernel}; load "
        f"average before: " + "/".join(f"{x:.2f}" for x in env.load_before),
        f"- versions: Python {env.python}, h11 {env.h11}, forkserve {env.forkserve}",
        f"- transport: {TRANSPORT_NOTES[settings.transport]}",
        f"- settings: forkserve -w 4 {shlex.join(settings.server_args)}".rstrip() +
        f", {settings.threads} client threads ({mix}; "
        f"half GET, half POST with 0-64 KiB bodies), {settings.duration_s:g} s per scenario, request "
        f"timeout {settings.request_timeout:g} s",
        "",
        *table(outcomes),
        "",
        verdict(outcomes),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    arguments = argv if argv is not None else sys.argv[1:]
    options = parser().parse_args(arguments)
    settings = Settings(
        duration_s=options.duration, threads=options.threads, request_timeout=options.request_timeout,
        stalled=options.stalled, slow_readers=options.slow_readers,
        server_args=tuple(shlex.split(options.server_args)), seed=options.seed, transport=options.transport,
    )
    names = options.scenario or list(NAMES)
    signal.signal(signal.SIGTERM, _on_term)
    raise_fd_limit()
    ensure_download_file()
    environment = Environment.capture("wrk")  # (the suite runs no wrk; its version is not shown)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    outcomes: list[Outcome] = []
    try:
        with tempfile.TemporaryDirectory(prefix="forkserve-chaos-") as workdir:
            for name in names:
                outcome = run_scenario(name, settings, Path(workdir), progress)
                outcomes.append(outcome)
                summary = outcome.summary
                progress(f"{name}: {'pass' if outcome.passed else 'FAIL'}: sent {summary.sent}, ok "
                         f"{summary.ok}, lost {summary.lost_total - outcome.excused}"
                         f"{tally(summary.lost, ' (')}{')' if summary.lost else ''}, refused "
                         f"{summary.not_sent}")
    except (ServerError, CertificateError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; servers and clients stopped", file=sys.stderr)
        return 130
    document = render(outcomes, settings, environment, shlex.join(["python", "-m", "benchmarks.chaos",
                                                                   *arguments]), time.monotonic() - started)
    sys.stdout.write(document)
    if options.output:
        try:
            options.output.write_text(document)
        except OSError as error:
            print(f"error: cannot write {os.fspath(options.output)}: {error.strerror or error}", file=sys.stderr)
            return 1
    return 0 if all(outcome.passed for outcome in outcomes) else 1

