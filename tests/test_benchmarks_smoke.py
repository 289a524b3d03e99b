"""The benchmark runner cannot rot: it runs end to end here, and always cleans up after itself.

Speed is never asserted (that is what the runner's own report is for); these tests check that
it completes, that its tables have every scenario with figures for every server (uWSGI and
granian when they are installed, a note saying they were skipped when not), that it leaves no
server process behind — also when interrupted — and that bad input gets a clear answer.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import ROOT, pid_alive, wait_for
from system_programs import require_program

if TYPE_CHECKING:
    from benchmarks.runner import Sample, ScenarioResult

SCENARIOS = (
    "hello-close", "hello-keepalive", "hello-keepalive-1perworker", "hello-c64", "json",
    "download-1mb", "upload-10mb",
)
DISTURBED = ("slow-clients", "slow-readers", "idle-keepalive")
MEMORY = ("idle-memory",)
TLS_SCENARIOS = ("tls-keepalive", "tls-close")  # issue 14: each server terminating TLS itself
TLS_SERVERS = ("forkserve TLS", "gunicorn TLS")
SERVERS = ("forkserve", "gunicorn")
COMPARATORS = ("uwsgi", "granian")
METRICS = ("req/s", "p50", "p99", "CPU µs/req", "worker RSS MiB")
# The app-thread scenarios: their own servers, the candidate first.
THREADS = {
    "hello-threads4-keepalive": ("forkserve 4 threads", "forkserve 1 thread"),
    "hello-threads4-close": ("forkserve 4 threads", "forkserve 1 thread"),
    "io-bound": ("forkserve 2×8 threads", "gunicorn gthread 2×8 threads"),
    "io-bound-16sync": ("forkserve 2×8 threads", "forkserve 16 sync workers"),
}
STARTED = re.compile(r"^\s+(\w+) on \S+: master pid (\d+), worker pids ([\d ]+)$", re.MULTILINE)


def _require_wrk() -> None:
    require_program("wrk", "the benchmark runner's load generator")


@contextlib.contextmanager
def _children_interruptible() -> Iterator[None]:
    """Children started inside get SIGINT at its default, as a user at a terminal has it.

    A pytest started as a background job of a non-interactive shell (``pytest &`` in a CI
    script) runs with SIGINT ignored, and an ignored signal stays ignored across exec: Python in
    the child then installs no KeyboardInterrupt handler and the INT the test sends is lost.
    A caught signal, by contrast, is reset to its default by exec; so while inside, this
    process catches SIGINT (as KeyboardInterrupt, Python's own default) instead of ignoring it.
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous == signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous)


def _runner(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks", *args]


def _started_pids(progress: str) -> list[int]:
    """Every master and worker pid the runner said it started."""
    pids: list[int] = []
    for _, master, workers in STARTED.findall(progress):
        pids += [int(master), *map(int, workers.split())]
    return pids


def _kill_leftovers(pids: list[int], workdirs: Path | None = None) -> None:
    """SIGKILL the pids given, and with ``workdirs`` every process whose working directory is
    inside it (the runner's servers run from its temporary directory): a runner stopped before
    it said which servers it had started leaves none behind."""
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if workdirs is None:
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "cwd").startswith(f"{workdirs}/"):
                os.kill(int(entry.name), signal.SIGKILL)


def _table(report: str, heading: str = "## Results") -> dict[tuple[str, str], dict[str, str]]:
    """The table under ``heading`` as {(scenario, server): {column: cell}}; blank scenario cells
    carry down."""
    lines = report.split(heading, 1)[1].split("\n#", 1)[0].strip().splitlines()
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines
            if line.startswith("|")]
    header, body = rows[0], rows[2:]
    table: dict[tuple[str, str], dict[str, str]] = {}
    scenario = ""
    for row in body:
        cells = dict(zip(header, row, strict=True))
        scenario = cells["scenario"] or scenario
        table[(scenario, cells["server"])] = cells
    return table


def _installed() -> list[str]:
    from benchmarks.servers import COMPARATORS as KINDS

    return [kind.name for kind in KINDS if kind.missing() is None]


def _number(cell: str) -> float:
    """A figure as the report prints it ('8,779', '777 µs', '3.90 ms', '1.42×')."""
    match = re.fullmatch(r"([\d,]+(?:\.\d+)?)\s*(µs|ms|×|MiB|KiB)?", cell)
    assert match, f"not a number: {cell!r}"
    return float(match.group(1).replace(",", ""))


def _targets(report: str, heading: str) -> dict[str, tuple[str, str]]:
    """A target table under ``heading`` as {target: (measured, met)}."""
    lines = report.split(heading, 1)[1].split("\n#", 1)[0].strip().splitlines()
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines
            if line.startswith("|")][2:]
    return {target: (measured, met) for target, measured, met in rows}


@pytest.mark.slow
def test_smoke_run_reports_every_scenario_for_every_server(tmp_path):
    _require_wrk()
    installed = _installed()
    output = tmp_path / "report.md"
    completed = subprocess.run(
        _runner("--smoke", "--output", str(output)), cwd=ROOT, capture_output=True, text=True,
        timeout=300, check=False, start_new_session=True,
    )
    pids = _started_pids(completed.stderr)
    try:
        assert completed.returncode == 0, completed.stderr
        report = output.read_text()
        assert report == completed.stdout
        assert "Smoke run" in report
        assert "python -m benchmarks --smoke" in report
        table = _table(report)
        for scenario in SCENARIOS:
            for server in (*SERVERS, *installed):
                row = table[(scenario, server)]
                assert _number(row["req/s"]) > 0, (scenario, server, row)
                assert _number(row["errors"]) == 0, (scenario, server, row)
                # The prober's fresh connections beside wrk: answered / sent (and how slowly).
                assert re.fullmatch(r"\d+/\d+(, ≤ .+)?", row["new clients answered within 2 s"]), row
                for metric in METRICS:
                    _number(row[metric])
                if server != "forkserve":
                    ratios = table[(scenario, f"**forkserve/{server}**")]
                    for metric in METRICS:
                        _number(ratios[metric])
        for name in COMPARATORS:
            if name not in installed:
                assert f"{name}: skipped, {name} is not installed" in report
        # Issue 17: forkserve against each comparator on three workloads, and its CPU per
        # keep-alive request; a comparator that is not installed is "not run", not a failure.
        versus = _targets(report, "## vs uWSGI and granian")
        for scenario in ("hello-keepalive-1perworker", "hello-c64", "hello-close"):
            for name in COMPARATORS:
                [(measured, met)] = [value for target, value in versus.items()
                                     if target.startswith(f"req/s ≥ {name}'s") and f"({scenario})" in target]
                assert met in ("yes", "**no**") if name in installed else measured.startswith("not run")
        assert sum(target.startswith("forkserve CPU ≤ 40 µs") for target in versus) == 2
        # Issue 13: each app-thread scenario on its own two servers, with every worker's memory.
        threads = _table(report, "## App threads")
        for scenario, (candidate, other) in THREADS.items():
            for server in (candidate, other):
                row = threads[(scenario, server)]
                assert _number(row["req/s"]) > 0, (scenario, server, row)
                assert _number(row["all workers PSS MiB"]) > 0, row
            _number(threads[(scenario, f"**{candidate}/{other}**")]["req/s"])
        assert _number(threads[("io-bound-16sync", "forkserve 16 sync workers")]["workers"]) == 16
        targets = _targets(report, "### Targets (issue 13)")
        assert sum(met in ("yes", "**no**") for _, met in targets.values()) == 5, targets
        assert any("memory saved" in target for target in targets), targets
        # Issue 14: TLS keep-alive and a handshake per request, forkserve's TLS beside gunicorn's.
        tls = _table(report, "## TLS in the server")
        for scenario in TLS_SCENARIOS:
            for server in TLS_SERVERS:
                row = tls[(scenario, server)]
                assert _number(row["req/s"]) > 0, (scenario, server, row)
                assert _number(row["errors"]) == 0, (scenario, server, row)
            _number(tls[(scenario, "**forkserve TLS/gunicorn TLS**")]["req/s"])
        # The misbehaving-client scenarios: each server against its own baseline, the goals
        # marked for forkserve; a collapse shows as an unknown (∞) p99, not as a fast one.
        disturbed = _table(report, "## Misbehaving clients")
        for scenario in DISTURBED:
            for server in SERVERS:
                row = disturbed[(scenario, server)]
                assert _number(row["served req/s alone"]) > 0, (scenario, server, row)
                _number(row["served with the clients"])
                unanswered, sent = (_number(part) for part in row["unanswered / sent"].split(" / "))
                assert sent >= unanswered, row
                met = [cell for cell in row.values() if cell in ("yes", "**no**", "—")]
                assert len(met) == 2, row
                assert (server == "forkserve") == ("—" not in met), row
        memory = _table(report, "## Memory per idle keep-alive connection")
        for scenario in MEMORY:
            for server in SERVERS:
                row = memory[(scenario, server)]
                assert _number(row["connections"]) == 1000, row
                assert row["KiB per open connection"] == "n/a" or _number(row["KiB per open connection"]) >= 0
        # Every server started says so (master + workers): at least one of each kind.
        assert len(pids) >= len(SERVERS + tuple(installed)) * 3, completed.stderr
        wait_for(lambda: not any(map(pid_alive, pids)), 15, message="benchmark servers to be gone")
    finally:
        _kill_leftovers(pids)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_interrupted_run_stops_every_server(tmp_path, signum):
    _require_wrk()
    progress = tmp_path / "progress.txt"
    # The runner's temporary directory (its servers' working directory) inside one of ours, so
    # teardown can find every server by where it runs; short, for the servers' unix sockets.
    workdirs = Path(tempfile.mkdtemp(prefix="fsb-", dir="/tmp"))
    with open(progress, "w") as sink, _children_interruptible():
        runner = subprocess.Popen(
            _runner("--scenario", "hello-keepalive", "--duration", "60", "--warmup", "0"),
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True,
            env={**os.environ, "TMPDIR": str(workdirs)},
        )
    pids: list[int] = []
    try:
        def all_started() -> bool:
            pids[:] = _started_pids(progress.read_text())
            return len(pids) == (2 + len(_installed())) * 3

        wait_for(all_started, 60, message="the runner to start every server")
        runner.send_signal(signum)
        try:
            code = runner.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the runner did not exit within 30 s of {signum.name}:\n"
                                 f"{progress.read_text()}") from None
        assert code != 0
        wait_for(lambda: not any(map(pid_alive, pids)), 15, message="benchmark servers to be gone")
    finally:
        if runner.poll() is None:
            runner.terminate()  # (it stops its servers on TERM; SIGKILL would orphan them)
            try:
                runner.wait(20)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.wait(5)
        _kill_leftovers(pids, workdirs)
        shutil.rmtree(workdirs, ignore_errors=True)


def test_unknown_scenario_is_refused_with_the_valid_names():
    completed = subprocess.run(_runner("--scenario", "nope"), cwd=ROOT, capture_output=True,
                               text=True, timeout=60, check=False)
    assert completed.returncode == 2
    assert "unknown scenario(s) nope" in completed.stderr
    assert "hello-keepalive" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_a_scenario_answers_to_its_other_names():
    from benchmarks.scenarios import select

    picked = select(["hello-keepalive-c2", "hello-keepalive-c64", "hello-close-c8", "hello-c64"])
    assert [scenario.name for scenario in picked] == ["hello-close", "hello-keepalive-1perworker", "hello-c64"]


def test_comparators_are_optional_unless_asked_for():
    from benchmarks.servers import UWSGI, ServerError, ServerKind, comparators

    absent = ServerKind("absent", UWSGI.launcher, optional=True, missing=lambda: "absent is not installed")
    kinds = (UWSGI, absent)
    chosen, notes = comparators(kinds=kinds)
    assert absent not in chosen
    assert "absent: skipped, absent is not installed" in notes
    chosen, notes = comparators(unwanted=["uwsgi", "absent"], kinds=kinds)
    assert chosen == ()
    assert "uwsgi: left out (--without)" in notes
    with pytest.raises(ServerError, match="absent was asked for with --with, but absent is not installed"):
        comparators(wanted=["absent"], kinds=kinds)
    completed = subprocess.run(_runner("--with", "nope"), cwd=ROOT, capture_output=True, text=True,
                               timeout=60, check=False)
    assert completed.returncode == 2
    assert "unknown comparator(s) nope" in completed.stderr


def test_wrk_output_without_a_result_line_is_an_error():
    from benchmarks.wrk import WrkError, parse_output

    line = ('BENCH-JSON {"duration_us": 2000000, "requests": 3000, "bytes": 9, "errors": {"connect": 0, '
            '"read": 1, "write": 0, "status": 2, "timeout": 0}, "latency_us": {"p50": 90, "p75": 99, '
            '"p90": 120, "p99": 400, "max": 900, "mean": 95.5}}')
    result = parse_output("Running 2s test\n" + line + "\n")
    assert result.requests_per_second == 1500
    assert result.error_count == 3
    assert result.latency_us["p99"] == 400
    with pytest.raises(WrkError, match="no result line"):
        parse_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_a_server_that_never_answers_is_reported_as_such_not_as_fast():
    """wrk alone shows a server that stopped answering as 0 requests, 0 errors and a latency of
    0; the counted script makes every request written and never answered show."""
    _require_wrk()
    from benchmarks.disturbed import LoadSample
    from benchmarks.wrk import COUNTED_SCRIPT, find_wrk, run_wrk

    with socket.socket() as silent:  # the kernel completes the handshakes; nobody ever reads
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        result = run_wrk(find_wrk(), url, 4, 1, "1s", (), COUNTED_SCRIPT)
    assert (result.requests, result.sent, result.unanswered) == (0, 4, 4), result.output
    sample = LoadSample.from_wrk(result)
    assert sample.served_per_second == 0
    assert math.isinf(sample.p99_us)


def test_profile_worker_reports_per_request_figures():
    _require_wrk()
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.profile_worker", "--duration", "1", "--top", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, start_new_session=True,
    )
    assert completed.returncode == 0, completed.stderr
    profiled = re.search(r"Profiled (\d+) requests over 2 worker\(s\)", completed.stdout)
    assert profiled and int(profiled.group(1)) > 0, completed.stdout
    inclusive = completed.stdout.split("forkserve functions by inclusive time", 1)[1]
    assert inclusive.count("| `forkserve/") == 5, completed.stdout


def test_sizing_sheet_smoke_run_reports_every_thread_count(tmp_path):
    """benchmarks.sizing (README "Sizing a fleet") end to end: one workload, 1 s runs."""
    _require_wrk()
    output = tmp_path / "sizing.md"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.sizing", "--smoke", "--output", str(output)], cwd=ROOT,
        capture_output=True, text=True, timeout=120, check=False, start_new_session=True,
    )
    assert completed.returncode == 0, completed.stderr
    rows = [line.split("|")[1:-1] for line in output.read_text().splitlines() if line.startswith("| hello |")]
    assert [int(row[1]) for row in rows] == [1], output.read_text()
    for row in rows:
        assert _number(row[3].strip()) > 0 and _number(row[4].strip()) > 0 and _number(row[9].strip()) > 0, row
def _sample(rps: float, p99_us: float = 1000.0, cpu_us: float = 50.0, rss_kib: float = 20480.0,
            workers: int = 2, probes: tuple[int, int] = (8, 8)) -> Sample:
    from benchmarks.runner import Sample

    return Sample(requests_per_second=rps, p50_us=p99_us / 2, p99_us=p99_us, max_us=p99_us * 2,
                  cpu_us_per_request=cpu_us, worker_rss_kib=rss_kib, worker_pss_kib=rss_kib / 2,
                  errors=0, requests=rps * 10, workers=workers, total_rss_kib=rss_kib * workers,
                  total_pss_kib=rss_kib / 2 * workers, probes_sent=probes[0], probes_answered=probes[1],
                  probe_slowest_us=3000.0)


def _result(name: str, connections: int, samples: dict[str, Sample]) -> ScenarioResult:
    from benchmarks.runner import ScenarioResult
    from benchmarks.scenarios import SCENARIOS

    scenario = next(scenario for scenario in SCENARIOS if scenario.name == name)
    return ScenarioResult(scenario, connections, {label: [sample] for label, sample in samples.items()})


def test_the_issue_tables_mark_each_goal_from_the_figures():
    """No servers: made-up figures through the report's issue-17 and issue-13 tables."""
    from benchmarks.report import threads_targets, versus_table

    versus = _targets("\n".join(["#", *versus_table([
        _result("hello-keepalive-1perworker", 2, {"forkserve": _sample(20_000, cpu_us=38),
                                                  "uwsgi": _sample(30_000, probes=(5, 1))}),
        _result("hello-c64", 16, {"forkserve": _sample(18_000), "uwsgi": _sample(9_000)}),
    ], ["granian: skipped, granian is not installed (pip install granian)"])]), "#")
    measured, met = versus["req/s ≥ uwsgi's, hello, keep-alive, 2 clients (hello-keepalive-1perworker)"]
    assert met == "**no**" and measured.startswith("0.67× (20,000 vs 30,000); uwsgi answered 1/5")
    # Run at other client counts than the goal's: shown, not judged.
    measured, met = versus["req/s ≥ uwsgi's, hello, keep-alive, 64 clients (hello-c64)"]
    assert (measured, met) == ("2.00× (18,000 vs 9,000), but at 16 clients", "—")
    assert versus["req/s ≥ granian's, hello, keep-alive, 2 clients (hello-keepalive-1perworker)"] == (
        "not run (skipped, granian is not installed (pip install granian))", "—")
    assert versus["req/s ≥ uwsgi's, hello, Connection: close, 8 clients (hello-close)"] == ("not run", "—")
    assert versus["forkserve CPU ≤ 40 µs per keep-alive request (hello-keepalive-1perworker, 2 clients)"] == (
        "38 µs", "yes")

    threads = _targets("\n".join(["#", *threads_targets([
        _result("io-bound", 64, {"forkserve 2×8 threads": _sample(300, p99_us=400_000, rss_kib=19_000),
                                 "gunicorn gthread 2×8 threads": _sample(310, p99_us=300_000, rss_kib=20_000)}),
        _result("hello-threads4-close", 8, {"forkserve 4 threads": _sample(8_600),
                                            "forkserve 1 thread": _sample(10_000)}),
        _result("io-bound-16sync", 64, {"forkserve 2×8 threads": _sample(300, rss_kib=10_240),
                                         "forkserve 16 sync workers": _sample(310, rss_kib=10_240, workers=16)}),
    ])]), "#")
    assert threads["io-bound: req/s ≥ gunicorn gthread 2×8 threads's"][1] == "**no**"
    assert threads["io-bound: p99 ≤ gunicorn gthread 2×8 threads's"] == ("400.00 ms vs 300.00 ms", "**no**")
    assert threads["io-bound: worker RSS ≤ gunicorn gthread 2×8 threads's (median worker)"][1] == "yes"
    assert threads["hello-threads4-close: req/s with --threads 4 within 15% of --threads 1 (8 clients)"] == (
        "0.86× (8,600 vs 10,000)", "yes")
    saved = "(reading aid) memory saved: all workers' PSS, forkserve 2×8 threads vs forkserve 16 sync workers"
    assert threads[saved] == ("10.0 MiB vs 80.0 MiB: 70.0 MiB saved (88 %)", "—")


def test_a_worker_replaced_during_a_run_is_listed_under_the_table():
    from benchmarks.report import _errors_notes

    result = _result("hello-close", 8, {"forkserve": _sample(5_000), "gunicorn": _sample(3_000)})
    result.notes.append("hello-close / forkserve, round 1: workers changed during the run: [1, 2] -> [1, 3]")
    assert _errors_notes([result]) == [
        "- hello-close / forkserve, round 1: workers changed during the run: [1, 2] -> [1, 3]"]
