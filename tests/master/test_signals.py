"""Master signals end to end: TERM serves the backlog, INT/QUIT are fast, TTIN/TTOU scale,
USR1 reopens logs in master and workers, WINCH parks the workers until HUP."""

from __future__ import annotations

import os
import select
import signal
import time
from pathlib import Path

import pytest
from conftest import pid_alive, raw_exchange, status_of, wait_for

APP = "supervision_app:application"
GET = b"GET /hello HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


def read_reply(sock, timeout: float = 20.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def stays(predicate, seconds: float) -> bool:
    """True if ``predicate`` holds every time it is polled for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.05)
    return True


def test_term_serves_every_connection_queued_in_the_backlog(start_server, tmp_path):
    pid_path = tmp_path / "forkserve.pid"
    server = start_server("-w", "1", "-p", str(pid_path), APP)
    assert Path(pid_path).read_text().strip() == str(server.pid)
    mark = tmp_path / "in-app"
    busy = server.connect(timeout=20)
    busy.sendall(f"GET /sleep?seconds=1.5&mark={mark} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    wait_for(mark.exists, 10, message="the worker to be in /sleep")
    queued = []
    for _ in range(20):
        sock = server.connect(timeout=20)
        sock.sendall(GET)
        queued.append(sock)
    # Nobody has been answered yet: the only worker is in /sleep, the rest wait in the backlog.
    assert select.select(queued, [], [], 0)[0] == []
    server.signal(signal.SIGTERM)
    replies = [read_reply(sock) for sock in [busy, *queued]]
    for sock in [busy, *queued]:
        sock.close()
    assert [status_of(reply) for reply in replies] == [200] * 21, replies
    assert server.wait_exit() == 0
    assert "served 20 queued connection(s) before exiting" in server.log()
    assert not pid_path.exists()
    with pytest.raises(ConnectionRefusedError):
        server.connect(timeout=2)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGQUIT], ids=["INT", "QUIT"])
def test_int_and_quit_abandon_requests_and_exit_promptly(start_server, signum, tmp_path):
    server = start_server("-w", "1", APP)
    worker = server.wait_workers(1)[0]
    mark = tmp_path / "in-app"
    sock = server.connect(timeout=20)
    sock.sendall(f"GET /sleep?seconds=30&mark={mark} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    wait_for(mark.exists, 10, message="the worker to be in /sleep")
    server.signal(signum)
    assert server.wait_exit(10) == 0  # long before the 30 s sleep would end
    assert read_reply(sock, 5) == b""  # the request was abandoned: connection closed, no reply
    sock.close()
    assert not pid_alive(worker)


def test_ttin_ttou_scale_never_below_one_and_hup_keeps_the_count(start_server):
    server = start_server("-w", "2", APP)
    first = server.wait_workers(2)
    server.signal(signal.SIGTTIN)
    three = server.wait_workers(3)
    added = (set(three) - set(first)).pop()
    server.signal(signal.SIGTTOU)
    two = server.wait_workers(2)
    assert added in two  # the oldest idle worker went, not the newest
    server.signal(signal.SIGTTOU)
    server.wait_workers(1)
    server.signal(signal.SIGTTOU)
    wait_for(lambda: "already at 1 worker, the minimum" in server.log(), 5, message="TTOU refusal")
    assert len(server.workers()) == 1
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload complete: 1 workers" in server.log(), 15, message="reload")
    server.wait_workers(1)  # the old one has gone
    assert stays(lambda: len(server.workers()) == 1, 1.0)
    assert status_of(raw_exchange(server, GET)) == 200
    log = server.log()
    assert "worker count 2 -> 3" in log and "worker count 3 -> 2" in log and "worker count 2 -> 1" in log


def test_usr1_reopens_rotated_log_in_master_and_workers(start_server, tmp_path):
    error_log = tmp_path / "error.log"
    server = start_server("-w", "2", "--error-logfile", str(error_log), APP)
    workers = server.wait_workers(2)

    def reopened() -> bool:
        text = error_log.read_text() if error_log.exists() else ""
        return f"[{server.pid}] [INFO] USR1 received" in text and all(
            f"[{pid}] [INFO] worker {pid} reopened its log files" in text for pid in workers
        )

    try:
        wait_for(lambda: error_log.read_text().count("booting worker") >= 2, 10, message="boot lines")
        error_log.rename(tmp_path / "error.log.1")
        server.signal(signal.SIGUSR1)
        wait_for(reopened, 15, message="new lines in a new file at the original path")
        assert "USR1" not in (tmp_path / "error.log.1").read_text()
        assert status_of(raw_exchange(server, GET)) == 200
    except AssertionError:  # say what the logs held
        for path in (tmp_path / "error.log.1", error_log):
            print(path, path.read_text() if path.exists() else "(missing)")
        raise


def test_winch_stops_workers_keeps_master_until_hup(start_server):
    server = start_server("-w", "2", APP)
    server.wait_workers(2)
    server.signal(signal.SIGWINCH)
    wait_for(lambda: server.workers() == [], 10, message="workers to stop")
    assert stays(lambda: server.workers() == [] and server.process.poll() is None, 1.5)
    server.signal(signal.SIGHUP)
    server.wait_workers(2)
    server.wait_ready()
    assert os.path.exists(f"/proc/{server.pid}")
