"""The master's stats endpoint: /stats while a worker is stuck, the listen queue, health and
readiness through shutdown, and a server that never lets one client block the master."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time

import pytest
import requests
from conftest import free_port, run_forkserve, wait_for
from test_metrics import scrape, value

from forkserve.stats.top import StatsUnavailable, fetch_stats, get


def _raw(address: str, data: bytes, timeout: float = 5.0) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
def test_stuck_worker_queue_depth_and_readiness_through_shutdown(start_server):
    stats = f"127.0.0.1:{free_port()}"
    server = start_server("-w", "1", "--graceful-timeout", "4", "--stats-bind", stats, "demo.wsgi:application")
    assert get(stats, "/healthz")[0] == 200
    wait_for(lambda: get(stats, "/readyz")[0] == 200, 10, message="readiness")

    def slow_request() -> None:
        with contextlib.suppress(requests.RequestException):  # the shutdown below cuts it short
            requests.get(server.url + "/sleep?seconds=30", timeout=40)

    slow = threading.Thread(target=slow_request, daemon=True)
    slow.start()

    def stuck_worker():
        workers = fetch_stats(stats)["workers"]
        return workers if workers and workers[0]["state"] == "busy" and workers[0]["request_age"] >= 0.2 else None

    (worker,) = wait_for(stuck_worker, 10, message="/stats to show the busy worker")
    assert worker["current_request"] == "GET /sleep?seconds=30"
    assert worker["pid"] == server.workers()[0] and worker["rss_bytes"] > 1_000_000 and worker["age"] > 0

    # The only worker is busy: new connections wait in the listen queue, and the master says so.
    queued = [socket.create_connection(server.address, timeout=5) for _ in range(3)]
    try:
        for sock in queued:
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: value(scrape(stats), "forkserve_listen_queue_depth", listener=server.url) == 3, 10,
                 message="listen queue depth 3")
        assert fetch_stats(stats)["listeners"][0]["queue_depth"] == 3
        assert get(stats, "/healthz")[0] == 200 and get(stats, "/readyz")[0] == 200

        server.signal(signal.SIGTERM)  # the worker is still in the app: the master drains
        _, body = wait_for(lambda: (reply := get(stats, "/readyz"))[0] == 503 and reply, 5,
                           message="/readyz to fail once TERM arrived")
        assert body == b"fail: shutting down\n"
        assert get(stats, "/healthz") == (200, b"ok: master loop alive, 1 worker(s)\n")
        assert fetch_stats(stats)["stopping"] is True
        assert server.wait_exit(15) == 0
    finally:
        for sock in queued:
            sock.close()
    with pytest.raises(StatsUnavailable):
        get(stats, "/healthz", timeout=1)


def test_endpoint_is_bounded_and_never_blocks_the_master(start_server, tmp_path):
    path = tmp_path / "stats.sock"
    stats = f"unix:{path}"
    app_sock = tmp_path / "app.sock"
    server = start_server("-w", "1", "-b", f"unix:{app_sock}", "--stats-bind", stats, "simple_apps:hello",
                          address=str(app_sock))
    assert path.exists()
    # A client that sends half a request and stalls does not stop anyone else being answered.
    stalled = socket.socket(socket.AF_UNIX)
    stalled.connect(str(path))
    stalled.sendall(b"GET /metr")
    try:
        document = fetch_stats(stats)
        assert document["listeners"][0]["address"] == f"unix:{app_sock}"
        assert document["listeners"][0]["queue_depth"] == 0  # sock_diag answers for unix sockets
        assert [worker["pid"] for worker in document["workers"]] == server.workers()
        status, body = get(stats, "/")
        assert status == 200 and b"/metrics" in body
        assert get(stats, "/nope")[0] == 404
    finally:
        stalled.close()
    server.stop()
    assert not path.exists()  # the master removes its socket file


def test_bad_requests_get_clear_answers(start_server):
    stats = f"127.0.0.1:{free_port()}"
    start_server("-w", "1", "--stats-bind", stats, "simple_apps:hello")
    assert _raw(stats, b"POST /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 405 ")
    assert _raw(stats, b"nonsense\r\n\r\n").startswith(b"HTTP/1.0 400 ")
    huge = b"GET /stats HTTP/1.0\r\nX-Filler: " + b"a" * 20_000 + b"\r\n\r\n"
    assert _raw(stats, huge).startswith(b"HTTP/1.0 431 ")
    head = _raw(stats, b"HEAD /stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ") and head.endswith(b"\r\n\r\n")
    reply = _raw(stats, b"GET /stats?pretty=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["target_workers"] == 1
    # many clients at once are all answered (bounded fan-in, one reply each, then closed)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(get(stats, "/healthz")[0])) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [200] * 20


def test_stats_bind_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_forkserve("-b", f"127.0.0.1:{free_port()}", "--stats-bind", f"127.0.0.1:{port}",
                               "simple_apps:hello")
    assert result.returncode == 1 and time.monotonic() - started < 20
    assert f"cannot bind 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr
