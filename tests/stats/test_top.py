"""`forkserve top` driven in a real pseudo-terminal: one frame rendered, then `q` quits."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

import requests
from conftest import APPS, ROOT, free_port, run_forkserve, wait_for

from forkserve.stats.top import render_frame

ESCAPES = re.compile(rb"\x1b(\[[0-9;?]*[A-Za-z@`]|\([0-9A-Za-z]|[=>78HMc]|\][^\x07]*\x07)")


def _screen_text(raw: bytes) -> str:
    """The printable text curses wrote, escape sequences removed (words stay whole)."""
    return ESCAPES.sub(b" ", raw).replace(b"\r", b" ").decode("utf-8", "replace")


def test_top_in_a_pty_renders_workers_and_quits_on_q(start_server):
    stats = f"127.0.0.1:{free_port()}"
    server = start_server("-w", "2", "--stats-bind", stats, "demo.wsgi:application")
    workers = server.wait_workers(2)
    for _ in range(3):
        requests.get(server.url + "/hello", timeout=5)

    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 140, 0, 0))
    # The window size comes from the pty; COLUMNS/LINES (pytest-xdist's processes have them)
    # would override it in curses.
    env = {name: value for name, value in os.environ.items() if name not in ("COLUMNS", "LINES")}
    env.update(TERM="xterm", PYTHONPATH=os.pathsep.join([str(ROOT), str(APPS)]))
    top = subprocess.Popen(
        [sys.executable, "-m", "forkserve", "top", "--stats", stats],
        stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True,
    )
    os.close(terminal)
    raw = b""
    try:
        def frame_shown() -> bool:
            nonlocal raw
            while select.select([controller], [], [], 0.05)[0]:
                try:
                    raw += os.read(controller, 65536)
                except OSError:
                    break
            text = _screen_text(raw)
            # (A loaded machine may draw a frame in pieces: wait for every part asserted below.)
            return (all(str(pid) in text for pid in workers) and "q quits" in text and "PID" in text
                    and "CURRENT REQUEST" in text and "listen queue" in text
                    and re.search(r"2xx\s+\d+", text) is not None)

        try:
            wait_for(frame_shown, 15, interval=0.05, message="a frame of forkserve top")
        except AssertionError as error:
            raise AssertionError(f"{error}; the screen so far: {_screen_text(raw)!r}") from None
        text = _screen_text(raw)
        assert "forkserve top" in text and stats in text and "PID" in text and "CURRENT REQUEST" in text
        assert "idle" in text and "requests" in text and "listen queue" in text
        assert re.search(r"2xx\s+\d+", text)
        os.write(controller, b"q")
        assert top.wait(10) == 0
    finally:
        if top.poll() is None:
            top.kill()
            top.wait(5)
        os.close(controller)


def test_top_once_prints_a_text_frame_and_reports_an_unreachable_server(start_server):
    stats = f"127.0.0.1:{free_port()}"
    server = start_server("-w", "1", "--stats-bind", stats, "simple_apps:hello")
    (pid,) = server.wait_workers(1)
    result = run_forkserve("top", "--once", "--stats", stats)
    assert result.returncode == 0, result.stderr
    assert str(pid) in result.stdout and "listen queue http://127.0.0.1:" in result.stdout
    unreachable = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_forkserve("top", "--once", "--stats", unreachable)
    assert result.returncode == 1 and f"no stats: cannot read {unreachable}" in result.stdout
    assert time.monotonic() - started < 20
    result = run_forkserve("top", "--stats", stats)  # no terminal: a clear refusal, not a curses traceback
    assert result.returncode == 2 and "needs a terminal" in result.stderr


def test_frame_shows_the_busy_request_and_its_age():
    stats = {
        "master_pid": 10, "uptime": 4000, "ready": True, "target_workers": 2,
        "workers_by_state": {"booting": 0, "idle": 1, "busy": 1, "stopping": 0},
        "totals": {"requests": 12, "by_status_class": {"2xx": 10, "5xx": 2}, "bytes_out": 4096},
        "restarts": {"max_requests": 0, "crash": 1}, "time": 5000.0,
        "adaptive": {"min_workers": 2, "max_workers": 6, "changes": {"up": 3, "down": 1},
                     "last_change": "3 -> 2: at least one worker idle and nothing queued for 30s",
                     "last_change_at": 4990.0},
        "connections_by_state": {"reading": 3, "idle": 40, "app": 1, "flushing": 2},
        "listeners": [{"address": "http://127.0.0.1:8000", "queue_depth": 4, "queue_limit": 128}],
        "workers": [
            {"pid": 11, "state": "busy", "requests": 7, "current_request": "GET /slow", "request_age": 75.5,
             "rss_bytes": 30 * 1024 * 1024, "age": 100.0, "last_restart_reason": "max_requests",
             "connections": {"reading": 3, "idle": 20, "app": 1, "flushing": 2}, "queue_time_worst": 0.4123},
            {"pid": 12, "state": "idle", "requests": 5, "current_request": None, "request_age": None,
             "rss_bytes": None, "age": 3.0},
        ],
    }
    lines = render_frame(stats, "127.0.0.1:9191")
    text = "\n".join(lines)
    assert "up 1h06m" in text and "ready" in text and "workers 2/2" in text
    assert "requests 12  2xx 10  3xx 0  4xx 0  5xx 2  sent 4.0K" in text
    assert "restarts crash 1" in text and "4 waiting (limit 128)" in text
    assert "connections reading 3  idle 40  app 1  flushing 2" in text
    busy = next(line for line in lines if line.lstrip().startswith("11 "))
    assert busy.split() == ["11", "busy", "7", "30.0M", "1m40s", "max_requests", "3/20/1/2", "412ms", "1m15s",
                            "GET", "/slow"]
    idle = next(line for line in lines if line.lstrip().startswith("12 "))
    assert idle.split() == ["12", "idle", "5", "-", "3.0s", "-", "0/0/0/0", "-"]
    assert "queue time, worst of the last 5-10 s: 412ms" in text
    assert ("adaptive workers 2..6: target 2, up 3 down 1; last 10.0s ago: 3 -> 2: at least one worker idle "
            "and nothing queued for 30s") in text
