"""The worker's loop: slow and idle clients cost a selector entry, never the worker.

Each test holds clients that a one-connection-at-a-time worker would have to wait out — half
heads, trickled bodies, slow readers, crowds of idle keep-alive connections — and checks that
ordinary requests are answered meanwhile (each within a bound far below the timeouts those
clients would otherwise hold a worker for), and that the held clients are served correctly too.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import requests
from conftest import free_port, pid_alive, process_title, wait_for
from http_wire import WireReader, exchange

APP = "front_app:app"
QUICK = 3.0  # seconds an ordinary request may take while the held clients wait (timeouts are 30 s)
SLOW_CLIENT_TIMEOUTS = ("--header-timeout", "30", "--body-timeout", "30")


def get(path: str, *headers: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: t", *headers]) + "\r\n\r\n").encode()


def quick_request(server, path: str = "/") -> bytes:
    """One request on a new connection, answered within QUICK seconds."""
    (response,), reader = exchange(server.address, get(path, "Connection: close"), timeout=QUICK)
    reader.sock.close()
    assert response.status == 200
    return response.body


@contextlib.contextmanager
def held_connections(server, count: int, payload: bytes) -> Iterator[list[socket.socket]]:
    """``count`` connections that each sent ``payload`` and then keep quiet."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(server.address, timeout=10)
            sock.sendall(payload)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def stats(address: str) -> dict:
    return requests.get(f"http://{address}/stats", timeout=5).json()


def test_stalled_half_heads_do_not_stop_service(start_server) -> None:
    server = start_server("-w", "2", *SLOW_CLIENT_TIMEOUTS, APP)
    with held_connections(server, 60, b"GET /half HTTP/1.1\r\nHost: t\r\nX-Stalled: ") as stalled:
        for _ in range(20):
            assert quick_request(server) == b"ok"
        # The stalled clients are still held, and finishing a head gets its answer.
        stalled[0].sendall(b"yes\r\n\r\n")
        assert WireReader(stalled[0], timeout=QUICK).response().status == 200


def test_trickled_uploads_are_buffered_and_do_not_hold_the_worker(start_server) -> None:
    server = start_server("-w", "1", *SLOW_CLIENT_TIMEOUTS, APP)
    body = bytes(range(256)) * 8
    head = f"POST /input HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    results: list[dict] = []

    def trickle() -> None:
        with socket.create_connection(server.address, timeout=30) as sock:
            sock.sendall(head)
            for start in range(0, len(body), 256):
                sock.sendall(body[start:start + 256])
                time.sleep(0.1)
            results.append(json.loads(WireReader(sock, timeout=30).response().body))

    uploads = [threading.Thread(target=trickle) for _ in range(3)]
    for thread in uploads:
        thread.start()
    for _ in range(10):  # one worker, three uploads in progress: it still answers at once
        assert quick_request(server) == b"ok"
    for thread in uploads:
        thread.join(30)
    expected = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(), "type": "BytesIO", "file": None}
    assert results == [expected] * 3  # the app got the whole body, from memory


def test_large_bodies_are_spooled_to_worker_tmp_dir(start_server, tmp_path) -> None:
    server = start_server("-w", "1", "--request-buffer-size", "1000", "--worker-tmp-dir", str(tmp_path), APP)
    small, large = b"s" * 900, bytes(range(256)) * 400
    for body, in_file in ((small, False), (large, True)):
        seen = requests.post(server.url + "/input", data=body, timeout=10).json()
        assert seen["length"] == len(body) and seen["sha256"] == hashlib.sha256(body).hexdigest()
        if in_file:  # an unnamed temporary file in the configured directory
            assert seen["file"].startswith(str(tmp_path) + "/"), seen
        else:
            assert seen["type"] == "BytesIO" and seen["file"] is None
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_a_chunked_upload_is_buffered_too(start_server) -> None:
    server = start_server("-w", "1", APP)
    pieces = [b"a" * 100, b"b" * 5000, b"c"]
    seen = requests.post(server.url + "/input", data=iter(pieces), timeout=10).json()
    assert seen["length"] == 5101 and seen["sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_a_slow_reader_of_a_file_does_not_hold_the_worker(start_server) -> None:
    """A wsgi.file_wrapper response is sent with sendfile by the loop while the worker serves others."""
    server = start_server("-w", "1", *SLOW_CLIENT_TIMEOUTS, APP)
    size = 8 * 1024 * 1024
    with socket.socket() as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        slow.settimeout(30)
        slow.connect(server.address)
        slow.sendall(get(f"/file?{size}"))
        assert slow.recv(16).startswith(b"HTTP/1.1 200")
        for _ in range(10):
            assert quick_request(server) == b"ok"
        received = 16
        while chunk := slow.recv(1 << 20):
            received += len(chunk)
            if received >= size:
                break
        assert received >= size


def test_a_crowd_of_idle_keepalive_connections_stays_open(start_server) -> None:
    stats_address = f"127.0.0.1:{free_port()}"
    server = start_server("-w", "1", "--keep-alive", "60", "--stats-bind", stats_address, APP)
    with held_connections(server, 300, get("/")) as idle:
        for sock in idle:
            assert WireReader(sock, timeout=10).response().status == 200
        for _ in range(10):
            assert quick_request(server) == b"ok"
        wait_for(lambda: stats(stats_address)["connections_by_state"]["idle"] >= 300, 5,
                 message="300 idle connections in /stats")
        for sock in idle[::30]:  # still open, still usable
            sock.sendall(get("/"))
            assert WireReader(sock, timeout=QUICK).response().body == b"ok"


def test_keepalive_connections_are_shared_among_the_workers(start_server) -> None:
    """Keep-alive clients stay on the worker that accepted them. Opened one after another while
    every worker waits, each new connection would wake the same worker (the first in the
    listener's wait queue), and that one worker would serve them all on one core. A worker
    that holds connections leaves newcomers to a sibling that holds clearly fewer."""
    stats_address = f"127.0.0.1:{free_port()}"
    server = start_server("-w", "3", "--keep-alive", "60", "--stats-bind", stats_address, APP)
    wait_for(lambda: [w["state"] for w in stats(stats_address)["workers"]] == ["idle"] * 3, 10,
             message="3 workers idle")
    holders = collections.Counter()
    with contextlib.ExitStack() as stack:
        for _ in range(6):
            sock = stack.enter_context(socket.create_connection(server.address, timeout=10))
            sock.sendall(get("/queue"))
            holders[json.loads(WireReader(sock, timeout=10).response().body)["connection"].split(".")[0]] += 1
    assert len(holders) == 3 and max(holders.values()) <= 3, holders


def test_worker_connections_caps_what_a_worker_holds(start_server) -> None:
    server = start_server("-w", "1", "--keep-alive", "60", "--worker-connections", "4", APP)
    with held_connections(server, 4, get("/")) as held:
        for sock in held:
            assert WireReader(sock, timeout=10).response().status == 200
        extra = socket.create_connection(server.address, timeout=10)  # queued by the kernel
        with extra:
            extra.sendall(get("/", "Connection: close"))
            extra.settimeout(0.5)
            try:
                early = extra.recv(1)
            except TimeoutError:
                early = None
            assert early is None  # not accepted while the worker holds its 4
            held[0].close()
            assert WireReader(extra, timeout=10).response().status == 200


def test_stats_show_connections_by_state_and_queue_time(start_server) -> None:
    stats_address = f"127.0.0.1:{free_port()}"
    server = start_server("-w", "1", "--keep-alive", "60", "--stats-bind", stats_address, APP)
    with held_connections(server, 3, b"GET / HTTP/1.1\r\nHost: t\r\n") as reading, \
            held_connections(server, 2, get("/")) as idle:
        for sock in idle:
            WireReader(sock, timeout=10).response()

        def seen() -> dict | None:
            worker = stats(stats_address)["workers"][0]
            return worker if worker["connections"]["reading"] == 3 and worker["connections"]["idle"] == 2 else None

        wait_for(seen, 5, message="3 reading and 2 idle connections in /stats")
        assert len(reading) == 3
    # A request queued behind a slow one reports the wait, in the environ and in /metrics.
    slow = threading.Thread(target=lambda: requests.get(server.url + "/sleep?0.4", timeout=10))
    slow.start()
    time.sleep(0.1)
    queued = requests.get(server.url + "/queue", timeout=10).json()
    slow.join()
    assert queued["queue_time"] > 0.1 and queued["connection"].count(".") == 1
    metrics = requests.get(f"http://{stats_address}/metrics", timeout=5).text
    assert 'forkserve_request_queue_seconds_bucket{le="0.1"}' in metrics
    assert 'forkserve_connections{state="idle"}' in metrics


def test_term_serves_what_was_queued_and_lets_nothing_new_in(start_server) -> None:
    """Connections the kernel accepted before TERM are all answered; one made after TERM is
    never accepted only to be reset (its SYN goes unanswered until the socket is gone); and the
    master exits once the work is done, not at graceful_timeout."""
    server = start_server("-w", "2", "--graceful-timeout", "30", APP)
    answers: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        (response,), reader = exchange(server.address, get("/sleep?0.3", "Connection: close"), timeout=20)
        reader.sock.close()
        with lock:
            answers.append(response.status)

    clients = [threading.Thread(target=one) for _ in range(8)]
    for thread in clients:
        thread.start()
    time.sleep(0.2)  # two in the app, six queued
    stopped_at = time.monotonic()
    server.signal(15)
    wait_for(lambda: "no new connections from now on" in server.log(), 5, message="the master to close the door")
    late = socket.socket()
    late.settimeout(0.5)
    try:
        late.connect(server.address)
    except (TimeoutError, ConnectionRefusedError):
        connected = False
    else:
        connected = True
    finally:
        late.close()
    for thread in clients:
        thread.join(20)
    assert answers == [200] * 8
    assert not connected
    assert server.wait_exit(20) == 0
    assert time.monotonic() - stopped_at < 15


def test_a_worker_whose_master_is_killed_finishes_what_it_holds(start_server) -> None:
    server = start_server("-w", "1", APP)
    (worker,) = server.wait_workers(1)
    replies: list[requests.Response] = []
    slow = threading.Thread(target=lambda: replies.append(requests.get(server.url + "/sleep?1", timeout=20)))
    slow.start()
    wait_for(lambda: "/sleep" in process_title(worker), 5, message="the request in the app")
    server.signal(9)  # SIGKILL: no master, no TERM for the worker
    slow.join(20)
    assert [reply.text for reply in replies] == ["slept"]
    wait_for(lambda: not pid_alive(worker), 10, message="the orphaned worker to exit")
    assert "master went away; finishing the requests in hand (and the connections queued" in server.log()
