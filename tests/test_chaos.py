"""The chaos suite, short: a real forkserve (-w 4) disturbed under a checked load loses nothing.

Each scenario runs for a few seconds with fewer client threads than the full suite
(``python -m benchmarks.chaos``), and must end with every request that was sent answered
correctly — the only exception being the one request a SIGKILLed worker had in its hands, which
the suite accounts for by itself. Connections refused after TERM are expected and not lost.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, pid_alive, wait_for
from system_programs import require_program

from benchmarks.chaos.cli import table
from benchmarks.chaos.scenarios import DISTURBANCES, Settings, run_scenario

DURATION_S = 2.0
THREADS = 4
# A client gives up on an answer after this long (the full suite waits 10 s); the stalled and slow
# clients are held for longer than that, so a server they take away would fail every request.
REQUEST_TIMEOUT = 4.0

STARTED = re.compile(r"master pid (\d+), worker pids ([\d ]+)$", re.MULTILINE)


@pytest.mark.slow
# "steady" (no disturbance) is left to the full suite: every scenario here includes its load.
@pytest.mark.parametrize("name", [name for name in DISTURBANCES if name != "steady"])
def test_no_request_is_lost(name, tmp_path):
    progress: list[str] = []
    outcome = run_scenario(name, Settings(duration_s=DURATION_S, threads=THREADS, request_timeout=REQUEST_TIMEOUT), tmp_path, progress.append)
    report = "\n".join([*table([outcome]), *progress])
    assert outcome.passed, report
    assert outcome.summary.ok > 100, report
    if name == "term":
        assert outcome.refused_expected > 0, report
    else:
        assert outcome.summary.refused + outcome.summary.no_connection == 0, report


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hup", "sigkill-worker", "term", "adaptive"])
def test_no_request_is_lost_with_app_threads(name, tmp_path):
    """The same disturbances with each worker running the app in 4 threads (adaptive: a worker
    whose threads are all taken leaves new connections to the worker just started)."""
    progress: list[str] = []
    settings = Settings(duration_s=DURATION_S, threads=THREADS, request_timeout=REQUEST_TIMEOUT,
                        server_args=("--threads", "4"))
    outcome = run_scenario(name, settings, tmp_path, progress.append)
    report = "\n".join([*table([outcome]), *progress])
    assert outcome.passed, report
    assert outcome.summary.ok > 100, report


@pytest.mark.slow
@pytest.mark.parametrize(("transport", "name"), [
    ("tls", "sigkill-worker"), ("tls", "term"), ("proxy", "hup"), ("uwsgi", "max-requests"),
])
def test_no_request_is_lost_over_another_transport(transport, name, tmp_path):
    """Over TLS, after a PROXY header and in uwsgi packets: every answer correct, and the app saw
    the client address the PROXY header or uwsgi packet named (the load checks each one)."""
    if transport == "tls":
        require_program("openssl", "to make the chaos suite's test certificate")
    progress: list[str] = []
    settings = Settings(duration_s=DURATION_S, threads=THREADS, request_timeout=REQUEST_TIMEOUT,
                        transport=transport)
    outcome = run_scenario(name, settings, tmp_path, progress.append)
    report = "\n".join([*table([outcome]), *progress])
    assert outcome.passed, report
    assert outcome.summary.ok > 100, report
    assert outcome.summary.lost["wrong-address"] == 0, report


def _run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks.chaos", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False, start_new_session=True)


def test_cli_prints_the_table_and_a_verdict_and_passes_server_arguments(tmp_path):
    output = tmp_path / "chaos.md"
    completed = _run_cli("--scenario", "steady", "--duration", "1", "--threads", "2",
                         "--server-args", "--keep-alive 1", "--output", str(output))
    assert completed.returncode == 0, completed.stderr
    assert output.read_text() == completed.stdout
    assert "forkserve -w 4 --keep-alive 1," in completed.stdout
    assert re.search(r"^\| steady \| [\d,]+ \| [\d,]+ \| 0 \|", completed.stdout, re.MULTILINE), completed.stdout
    assert "**Verdict: PASS**" in completed.stdout
    pids = [int(pid) for master, workers in STARTED.findall(completed.stderr) for pid in [master, *workers.split()]]
    assert len(pids) == 5, completed.stderr
    assert not any(map(pid_alive, pids))


def test_cli_reports_a_server_that_does_not_start():
    completed = _run_cli("--scenario", "steady", "--duration", "1", "--server-args=--no-such-option")
    assert completed.returncode == 1
    assert "error: forkserve exited" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_terminated_suite_stops_its_server():
    runner = subprocess.Popen([sys.executable, "-m", "benchmarks.chaos", "--scenario", "steady", "--duration", "60"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    pids: list[int] = []
    try:
        line = ""
        with contextlib.suppress(TimeoutError):
            line = wait_for(lambda: runner.stderr.readline(), 30, message="the suite to start forkserve")
        for master, workers in STARTED.findall(line):
            pids += [int(master), *map(int, workers.split())]
        assert len(pids) == 5, line
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(30) != 0
        wait_for(lambda: not any(map(pid_alive, pids)), 15, message="forkserve to be gone")
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(5)
        for pid in pids:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
