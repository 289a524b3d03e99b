"""Recycling and crashes: max_requests (with jitter) and max_worker_lifetime replace workers
without a failed request; max_worker_memory retires a grown worker after its response; crashed
workers are replaced with the cause logged, and respawns back off when workers die at once."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import time

import pytest
import requests
from conftest import wait_for
from loadclient import LoadLoop

APP = "supervision_app:application"


def recycle_under_load(start_server, *options: str) -> str:
    """Serve 2 workers under load until both first workers were recycled; check that no request
    failed and that capacity never dipped; return the log."""
    server = start_server("-w", "2", *options, APP)
    first = server.wait_workers(2)
    with LoadLoop(server.connect) as load:
        wait_for(lambda: not set(first) & set(server.workers()) or load.failures, 30,
                 message="both first workers to be recycled")
        load.wait_ok(20)
    assert load.failures == [], (load.failures, server.log())
    lines = server.log().splitlines()
    for pid in first:  # a replacement boots after the worker asks to go and before it exits
        asked = next(i for i, line in enumerate(lines) if f"worker {pid} is being recycled" in line)
        exited = next(i for i, line in enumerate(lines) if f"worker {pid} exited" in line)
        assert any("booting worker" in line for line in lines[asked:exited]), lines[asked:exited + 1]
    return server.log()


def test_max_requests_with_jitter_recycles_without_failures(start_server):
    log = recycle_under_load(start_server, "--max-requests", "15", "--max-requests-jitter", "10")
    limits = [int(limit) for limit in re.findall(r"is near max_requests \(\d+ of its limit (\d+)\)", log)]
    assert len(limits) >= 2 and all(15 <= limit <= 25 for limit in limits), log


def test_max_worker_lifetime_recycles_without_failures(start_server):
    log = recycle_under_load(start_server, "--max-worker-lifetime", "1", "--max-worker-lifetime-jitter", "0.5")
    # Each first worker is replaced for its age: asked ahead by the master ("…, 1s old"), or, on a
    # loaded machine where the master looked late, at the worker's own hard deadline.
    assert len(re.findall(r"is being recycled \(max_worker_lifetime(, \d+s old)?\)", log)) >= 2, log


def test_max_worker_memory_finishes_the_response_then_replaces_the_worker(start_server):
    server = start_server("-w", "1", "--max-worker-memory", "80", APP)
    grown = server.wait_workers(1)[0]
    assert requests.get(server.url + "/grow?mb=10", timeout=10).text == "grew\n"
    assert server.workers() == [grown]  # still under the limit
    reply = requests.get(server.url + "/grow?mb=100", timeout=10)
    assert reply.status_code == 200 and reply.text == "grew\n"
    wait_for(lambda: grown not in server.workers() and len(server.workers()) == 1, 10, message="replacement")
    match = re.search(rf"worker {grown}: resident memory (\d+\.\d) MB is over max_worker_memory 80 MB", server.log())
    assert match and float(match.group(1)) > 100, server.log()
    assert requests.get(server.url + "/hello", timeout=10).text == "hello\n"


def test_crashed_workers_are_replaced_and_the_cause_logged(start_server):
    server = start_server("-w", "1", APP)
    for path, cause in (("/segfault", "was killed by SIGSEGV"), ("/exit?code=7", "exited with code 7")):
        victim = server.wait_workers(1)[0]
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url + path, timeout=10)
        wait_for(lambda v=victim: v not in server.workers() and len(server.workers()) == 1, 10,
                 message=f"a replacement after {path}")
        assert f"worker {victim} {cause}" in server.log()
        assert requests.get(server.url + "/hello", timeout=10).text == "hello\n"
    assert "Fatal Python error: Segmentation fault" in server.log()  # with the crashing stack


@pytest.mark.parametrize("failure", ["raise", "exit"])
def test_workers_dying_at_start_back_off_and_recover(start_server, tmp_path, failure):
    fail_file = tmp_path / "fail"
    server = start_server("-w", "1", APP, env={"SUPERVISION_APP_FAIL_FILE": str(fail_file)})
    worker = server.wait_workers(1)[0]
    fail_file.write_text(failure)  # from now on, a new worker dies while importing the app
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: "(3 in a row); waiting 1.00s before the next" in server.log(), 20, message="backoff")
    log = server.log()
    assert "(1 in a row); waiting 0.25s" in log and "(2 in a row); waiting 0.50s" in log
    if failure == "raise":
        assert log.count("RuntimeError: supervision_app is broken on purpose") == 1, log  # logged once
    assert server.process.poll() is None  # after the first start, failing workers never stop the master
    fail_file.unlink()
    server.wait_ready()


def served_by(replies: list[requests.Response]) -> collections.Counter[int]:
    return collections.Counter(reply.json()["pid"] for reply in replies)


@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "close-per-request"])
def test_max_requests_is_a_hard_limit_even_when_the_replacement_is_slow_to_boot(start_server, keep_alive):
    """A replacement that takes 2 s to boot does not let the worker overshoot its budget: the
    request that reaches the limit is answered with Connection: close and the worker takes no
    other; the next requests wait for the replacement instead."""
    server = start_server("-w", "1", "--max-requests", "20", APP,
                          env={"SUPERVISION_APP_IMPORT_SECONDS": "2"})
    replies = []
    with requests.Session() as session:
        for _ in range(70):
            headers = {} if keep_alive else {"Connection": "close"}
            reply = session.get(server.url + "/version", headers=headers, timeout=20)
            assert reply.status_code == 200
            replies.append(reply)
    counts = served_by(replies)
    assert len(counts) >= 3, counts
    assert max(counts.values()) <= 20, counts
    last_of_first = [reply for reply in replies if reply.json()["pid"] == replies[0].json()["pid"]][-1]
    assert last_of_first.headers["Connection"] == "close"
    assert re.search(r"worker \d+ reached max_requests \(20 served, its limit 20\); exiting", server.log())


def test_max_worker_lifetime_is_a_hard_deadline(start_server):
    """Past its lifetime a worker takes no new request, even when its replacement is not up yet."""
    server = start_server("-w", "1", "--max-worker-lifetime", "6", APP,
                          env={"SUPERVISION_APP_IMPORT_SECONDS": "3.5"})
    first = requests.get(server.url + "/version", timeout=20).json()["pid"]
    wait_for(lambda: f"[{first}] [INFO] worker {first} reached the end of its max_worker_lifetime; exiting"
             in server.log(), 10, message="the lifetime to end")
    wait_for(lambda: first not in server.workers(), 5, message="the worker to exit")
    assert requests.get(server.url + "/version", timeout=20).json()["pid"] != first


def test_a_request_that_waits_on_its_client_counts_once_toward_max_requests(start_server):
    """A body that arrives in two pieces makes the worker wait on the client mid-request; that
    wait must not count as another request against the budget. (No readiness probe: every
    request the worker serves is one of these; the replacement it asks for after 3 takes 3 s to
    boot, so all 6 are the first worker's.)"""
    server = start_server("-w", "1", "--max-requests", "6", APP, ready=False,
                          env={"SUPERVISION_APP_IMPORT_SECONDS": "3"})
    def listening() -> bool:
        try:
            server.connect().close()
        except OSError:
            return False
        return True

    wait_for(listening, 10, message="the listening socket")
    pids = []
    for _ in range(6):
        with server.connect(timeout=15) as sock:
            sock.sendall(b"POST /version HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nConnection: close\r\n\r\nab")
            time.sleep(0.05)  # the worker is now waiting for the rest of the body
            sock.sendall(b"cd")
            reply = b"".join(iter(lambda: sock.recv(65536), b""))
        pids.append(json.loads(reply.partition(b"\r\n\r\n")[2])["pid"])
    assert len(set(pids)) == 1, (pids, server.log())
