"""Timeouts that explain themselves: a worker stuck in the app is shown (its stack, request line
and duration in the error log) and replaced; idle workers and slow clients are not timeouts; a
worker that stops beating while idle is replaced."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
import requests
from conftest import raw_exchange, status_of, wait_for

from forkserve.master.watchdog import RespawnBackoff, overdue, same_episode
from forkserve.process.scoreboard import SlotView, State


def test_timeout_dumps_the_stack_and_replaces_the_worker(start_server, tmp_path):
    marker = tmp_path / "worker_abort"
    config = tmp_path / "forkserve.conf.py"
    config.write_text(f"def worker_abort(worker):\n    open({str(marker)!r}, 'w').write(str(worker.pid))\n")
    server = start_server("-c", str(config), "-w", "1", "--timeout", "2", "demo.wsgi:application")
    stuck = server.wait_workers(1)[0]
    try:
        reply = requests.get(server.url + "/sleep?seconds=30", timeout=25)
        outcome = reply.status_code
    except requests.ConnectionError:
        outcome = "closed"
    assert outcome in (500, "closed")
    log = server.log()
    assert re.search(rf"worker {stuck} timed out: 'GET /sleep\?seconds=30' has run \d+\.\ds \(timeout 2s\)", log), log
    assert "in slow_view_sleeping" in log  # faulthandler's frame line: where the app was stuck
    assert marker.read_text() == str(stuck)  # worker_abort ran in the stuck worker
    replacement = wait_for(lambda: [p for p in server.workers() if p != stuck], 10, message="a replacement")
    assert stuck not in server.workers() and len(replacement) == 1
    assert requests.get(server.url + "/hello", timeout=10).text == "Hello, world!"


def test_idle_workers_and_slow_clients_are_not_timed_out(start_server):
    server = start_server("-w", "1", "--timeout", "1", "--header-timeout", "8",
                          "supervision_app:application")
    worker = server.wait_workers(1)[0]
    # A client that takes 2.4 s to send its head keeps the worker waiting (not busy in the app),
    # and the worker sits idle for as long: neither is a timeout.
    pieces = [b"GET /hello HTTP/1.1\r\n", b"Host: test\r\n", b"X-Slow: yes\r\n", b"Connection: close\r\n\r\n"]
    reply = raw_exchange(server, pieces, timeout=10, pause=0.8)
    assert status_of(reply) == 200
    assert server.workers() == [worker]
    assert "timed out" not in server.log() and "stuck" not in server.log()


@pytest.mark.slow
def test_worker_without_heartbeat_while_idle_is_replaced(start_server):
    server = start_server("-w", "1", "--timeout", "1", "--header-timeout", "0.5", "--keep-alive", "0",
                          "--log-level", "debug", "supervision_app:application", ready=False)
    frozen = server.wait_workers(1)[0]
    # No request is sent before the freeze, so the worker is certainly idle, not busy.
    wait_for(lambda: f"worker {frozen} ready" in server.log(), 15, message="the worker to be ready")
    os.kill(frozen, signal.SIGSTOP)  # as deadlocked as a process gets: no heartbeat at all
    try:
        wait_for(lambda: f"worker {frozen} is stuck: no heartbeat" in server.log(), 20, message="stall")
        assert "while idle" in server.log()
        wait_for(lambda: frozen not in server.workers() and len(server.workers()) == 1, 10,
                 message="the replacement")
    finally:
        if frozen in server.workers():
            os.kill(frozen, signal.SIGKILL)
    assert f"worker {frozen} still running after its stack dump; killing it" in server.log()
    server.wait_ready()


def view(state: State, start: float = 0.0, heartbeat: float = 100.0) -> SlotView:
    return SlotView(0, 42, state, start, heartbeat, 3, "GET /x", 0.0)


def test_overdue_rules():
    assert overdue(view(State.BUSY, start=90.0), 100.0, 30, 40) is None
    busy = overdue(view(State.BUSY, start=60.0), 100.0, 30, 40)
    assert busy is not None and busy.kind == "busy" and busy.seconds == 40 and busy.request_line == "GET /x"
    # Idle is never a timeout, only a missing heartbeat is (longer than the stall limit).
    assert overdue(view(State.IDLE, heartbeat=50.0), 100.0, 30, 60) is None
    stalled = overdue(view(State.IDLE, heartbeat=30.0), 100.0, 30, 60)
    assert stalled is not None and stalled.kind == "stalled"
    assert overdue(view(State.BOOTING, heartbeat=30.0), 100.0, 30, 60) is not None
    assert overdue(view(State.BUSY, start=1.0), 100.0, 0, 60) is None  # timeout 0 disables
    assert overdue(view(State.STOPPING, heartbeat=1.0), 100.0, 30, 60) is None


def test_same_episode_requires_same_worker_and_request():
    first = view(State.BUSY, start=60.0)
    assert same_episode(first, view(State.BUSY, start=60.0))
    assert not same_episode(first, view(State.BUSY, start=61.0))  # a new request began
    assert not same_episode(first, view(State.IDLE, start=0.0))


def test_respawn_backoff_doubles_caps_and_resets():
    backoff = RespawnBackoff(base=0.25, cap=1.0, instant=2.0)
    now = time.monotonic()
    assert [backoff.worker_exited(0.1, now) for _ in range(4)] == [0.25, 0.5, 1.0, 1.0]
    assert backoff.wait_left(now) == pytest.approx(1.0)
    assert backoff.worker_exited(5.0, now) == 0.0 and backoff.failures == 0 and backoff.wait_left(now) == 0
