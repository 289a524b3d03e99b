"""The benchmark runner cannot rot: it runs end to end here, and always cleans up after itself.

Speed is never asserted (that is what the runner's own report is for); these tests check that
it completes, that its table has every scenario with figures for both servers, that it leaves
no server process behind — also when interrupted — and that bad input gets a clear answer.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import ROOT, pid_alive, wait_for
from system_programs import require_program

SCENARIOS = (
    "hello-close", "hello-keepalive", "hello-keepalive-1perworker", "hello-c64", "json",
    "download-1mb", "upload-10mb",
)
DISTURBED = ("slow-clients", "slow-readers", "idle-keepalive")
MEMORY = ("idle-memory",)
SERVERS = ("forkserve", "gunicorn")
METRICS = ("req/s", "p50", "p99", "CPU µs/req", "worker RSS MiB")
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


def _kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _table(report: str, heading: str = "## Results") -> dict[tuple[str, str], dict[str, str]]:
    """The table under ``heading`` as {(scenario, server): {column: cell}}; blank scenario cells
    carry down."""
    lines = report.split(heading, 1)[1].split("\n## ", 1)[0].strip().splitlines()
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


def _number(cell: str) -> float:
    """A figure as the report prints it ('8,779', '777 µs', '3.90 ms', '1.42×')."""
    match = re.fullmatch(r"([\d,]+(?:\.\d+)?)\s*(µs|ms|×|MiB|KiB)?", cell)
    assert match, f"not a number: {cell!r}"
    return float(match.group(1).replace(",", ""))


@pytest.mark.slow
def test_smoke_run_reports_every_scenario_for_both_servers(tmp_path):
    _require_wrk()
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
            for server in SERVERS:
                row = table[(scenario, server)]
                assert _number(row["req/s"]) > 0, (scenario, server, row)
                for metric in METRICS:
                    _number(row[metric])
            ratios = table[(scenario, "**forkserve/gunicorn**")]
            for metric in METRICS:
                _number(ratios[metric])
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
        # Every server started says so (master + 2 workers): at least one of each kind.
        assert len(pids) >= len(SERVERS) * 3, completed.stderr
        wait_for(lambda: not any(map(pid_alive, pids)), 15, message="benchmark servers to be gone")
    finally:
        _kill_leftovers(pids)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_interrupted_run_stops_every_server(tmp_path, signum):
    _require_wrk()
    progress = tmp_path / "progress.txt"
    with open(progress, "w") as sink, _children_interruptible():
        runner = subprocess.Popen(
            _runner("--scenario", "hello-keepalive", "--duration", "60", "--warmup", "0"),
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True,
        )
    pids: list[int] = []
    try:
        def both_started() -> bool:
            pids[:] = _started_pids(progress.read_text())
            return len(pids) == 2 * 3

        wait_for(both_started, 60, message="the runner to start both servers")
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
            runner.kill()
            runner.wait(5)
        _kill_leftovers(pids)


def test_unknown_scenario_is_refused_with_the_valid_names():
    completed = subprocess.run(_runner("--scenario", "nope"), cwd=ROOT, capture_output=True,
                               text=True, timeout=60, check=False)
    assert completed.returncode == 2
    assert "unknown scenario(s) nope" in completed.stderr
    assert "hello-keepalive" in completed.stderr
    assert "Traceback" not in completed.stderr


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
