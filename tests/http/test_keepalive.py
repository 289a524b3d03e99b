"""Keep-alive, pipelining, 100-continue, and slow clients, end to end.

The rules: an idle keep-alive connection costs the worker a selector entry, not its time — it
stays open for ``keepalive`` seconds whoever else comes, and closes at once (after a short grace
for a request on its way) when the worker is told to stop. Pipelined requests are answered in
order. A slow client gets a 408 at its deadline while other clients are served, and is never
treated as a worker stuck in the app.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import threading
import time

import pytest
from conftest import wait_for
from http_wire import WireReader, exchange, send_pieces


def get(path: str, *headers: str, version: str = "HTTP/1.1") -> bytes:
    return ("\r\n".join([f"GET {path} {version}", "Host: example.com", *headers]) + "\r\n\r\n").encode()


def connect(server) -> tuple[socket.socket, WireReader]:
    sock = socket.create_connection(server.address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, WireReader(sock)


# -- keep-alive and pipelining ------------------------------------------------------------------

def test_one_connection_carries_many_requests(start_server) -> None:
    server = start_server("recording_app:app", "-w", "2")
    sock, reader = connect(server)
    with sock:
        pids = set()
        for n in range(5):
            sock.sendall(get(f"/environ?n={n}"))
            response = reader.response()
            assert response.status == 200 and response.header("Connection") is None
            environ = json.loads(response.body)
            assert environ["QUERY_STRING"] == f"n={n}"
            pids.add(environ["pid"])
        assert len(pids) == 1  # the same worker, the same connection


def test_pipelined_requests_are_answered_in_order(start_server) -> None:
    server = start_server("recording_app:app", "-w", "2")
    requests = [get(f"/environ?n={n}") for n in range(19)] + [get("/environ?n=19", "Connection: close")]
    responses, reader = exchange(server.address, b"".join(requests), count=20)
    assert [json.loads(r.body)["QUERY_STRING"] for r in responses] == [f"n={n}" for n in range(20)]
    assert responses[-1].header("Connection") == "close"
    assert reader.closes()
    reader.sock.close()


def test_pipelined_requests_sent_in_odd_pieces(start_server) -> None:
    server = start_server("recording_app:app", "-w", "1")
    stream = b"".join(get(f"/environ?n={n}") for n in range(6))
    sock, reader = connect(server)
    with sock:
        send_pieces(sock, [stream[i:i + 37] for i in range(0, len(stream), 37)], pause=0.002)
        got = [json.loads(reader.response().body)["QUERY_STRING"] for _ in range(6)]
    assert got == [f"n={n}" for n in range(6)]


def test_idle_connection_closes_after_keepalive_seconds(start_server) -> None:
    server = start_server("recording_app:app", "-w", "1", "--keep-alive", "0.5")
    sock, reader = connect(server)
    with sock:
        sock.sendall(get("/"))
        assert reader.response().header("Connection") is None  # kept open ...
        started = time.monotonic()
        assert reader.closes(timeout=10)  # ... until the idle timeout
        assert time.monotonic() - started >= 0.3


def test_keepalive_zero_closes_after_every_response(start_server) -> None:
    server = start_server("recording_app:app", "-w", "1", "--keep-alive", "0")
    (response,), reader = exchange(server.address, get("/"))
    assert response.header("Connection") == "close" and reader.closes()
    reader.sock.close()


def test_an_idle_keepalive_connection_does_not_hold_the_worker(start_server) -> None:
    server = start_server("recording_app:app", "-w", "1", "--keep-alive", "60")
    first, first_reader = connect(server)
    with first:
        first.sendall(get("/"))
        assert first_reader.response().header("Connection") is None
        # One worker, with `first` idle for up to 60 s: a newcomer is served meanwhile ...
        (answer,), second_reader = exchange(server.address, get("/environ", "Connection: close"), timeout=10)
        assert answer.status == 200
        second_reader.sock.close()
        # ... and `first` was not closed for it.
        first.sendall(get("/environ"))
        again = first_reader.response()
        assert again.status == 200 and again.header("Connection") is None


def test_a_response_keeps_its_connection_while_others_wait(start_server, tmp_path) -> None:
    hits = tmp_path / "hits.jsonl"
    server = start_server("recording_app:app", "-w", "1", "--keep-alive", "60",
                          env={"FORKSERVE_TEST_HITS": str(hits)})
    busy, busy_reader = connect(server)
    with busy:
        busy.sendall(get("/sleep?0.5"))
        wait_for(lambda: hits.exists() and "/sleep" in hits.read_text(), 10, message="the app to start")
        waiting, waiting_reader = connect(server)  # held by the worker while it is in the app
        with waiting:
            waiting.sendall(get("/environ"))
            response = busy_reader.response()
            assert response.body == b"slept" and response.header("Connection") is None
            assert waiting_reader.response().status == 200
            busy.sendall(get("/environ"))
            assert busy_reader.response().status == 200


def test_a_slow_reader_of_a_large_response_does_not_hold_the_worker(start_server) -> None:
    """The worker hands the rest of a large response to its loop: while the client reads it in
    small sips, the only worker serves another client, and the slow reader's next request on
    the same connection is answered too."""
    server = start_server("recording_app:app", "-w", "1", "--keep-alive", "10")
    size = 4 * 1024 * 1024
    reader_sock = socket.socket()
    reader_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # a small window: the
    reader_sock.settimeout(10)                                         # response waits on our side
    reader_sock.connect(server.address)
    with reader_sock:
        reader_sock.sendall(get(f"/big?{size}"))
        head = b""
        while b"\r\n\r\n" not in head:
            head += reader_sock.recv(4096)
        head, _, received = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in head.lower()
        (other,), other_reader = exchange(server.address, get("/environ", "Connection: close"), timeout=5)
        other_reader.sock.close()
        assert other.status == 200  # served while most of the 4 MiB is still ours to send
        got = len(received)
        while got < size:
            chunk = reader_sock.recv(16384)
            assert chunk, f"connection closed after {got} of {size} bytes"
            got += len(chunk)
        reader_sock.sendall(get("/environ"))
        reply = WireReader(reader_sock).response()
        assert reply.status == 200 and reply.header("Connection") is None


def test_idle_keepalive_is_closed_promptly_when_the_worker_is_told_to_stop(start_server) -> None:
    server = start_server("recording_app:app", "-w", "1", "--keep-alive", "60")
    (worker,) = server.wait_workers(1)
    sock, reader = connect(server)
    with sock:
        sock.sendall(get("/"))
        assert reader.response().header("Connection") is None
        os.kill(worker, signal.SIGTERM)
        assert reader.closes(timeout=10)  # not after the 60 s keep-alive
    wait_for(lambda: worker not in server.workers() and len(server.workers()) == 1, 10,
             message="the worker to be replaced")


def test_idle_keepalive_does_not_delay_a_graceful_shutdown(start_server) -> None:
    server = start_server("recording_app:app", "-w", "1", "--keep-alive", "60", "--graceful-timeout", "60")
    sock, reader = connect(server)
    with sock:
        sock.sendall(get("/"))
        assert reader.response().header("Connection") is None
        server.signal(signal.SIGTERM)
        assert reader.closes(timeout=10)
    assert server.wait_exit(10) == 0


# -- 100-continue -------------------------------------------------------------------------------

def test_100_continue_is_sent_when_the_app_reads(start_server) -> None:
    server = start_server("recording_app:app", "-w", "1")
    sock, reader = connect(server)
    with sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        interim = reader.response()  # the client waits for this before it sends the body
        assert (interim.status, interim.reason) == (100, "Continue")
        sock.sendall(b"hello")
        final = reader.response()
        assert final.status == 200 and json.loads(final.body) == {"body": "hello", "length": 5}
        assert final.header("Connection") is None


def test_buffering_sends_100_continue_and_reads_the_body_the_app_ignores(start_server) -> None:
    server = start_server("recording_app:app", "-w", "1")
    sock, reader = connect(server)
    with sock:
        sock.sendall(b"POST /noread HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert reader.response().status == 100  # the server reads the body before the app runs
        sock.sendall(b"hello")
        response = reader.response()
        assert (response.status, response.body) == (200, b"unread")
        assert response.header("Connection") is None  # the body was read: the connection is reusable
        sock.sendall(get("/environ"))
        assert reader.response().status == 200


def test_no_100_continue_when_the_app_does_not_read(start_server, tmp_path) -> None:
    """Without request buffering the 100 Continue goes out only when the app reads."""
    hits = tmp_path / "hits.jsonl"
    server = start_server("recording_app:app", "-w", "1", "--no-request-buffering",
                          env={"FORKSERVE_TEST_HITS": str(hits)})
    sock, reader = connect(server)
    with sock:
        sock.sendall(b"POST /noread HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n")
        response = reader.response()
        assert (response.status, response.body) == (200, b"unread")
        assert response.header("Connection") == "close"  # the body never came: cannot reuse
        assert reader.closes()
    assert sum('"PATH_INFO": "/noread"' in line for line in hits.read_text().splitlines()) == 1


# -- slow clients -------------------------------------------------------------------------------

class Trickler(threading.Thread):
    """Sends ``data`` one byte at a time, ``pause`` apart, then keeps quiet; reads the answer."""

    def __init__(self, server, data: bytes, pause: float) -> None:
        super().__init__(daemon=True)
        self.sock, self.reader = connect(server)
        self.port = self.sock.getsockname()[1]
        self.data = data
        self.pause = pause
        self.response = None
        self.closed = False
        self.started_at = time.monotonic()

    def run(self) -> None:
        for index in range(len(self.data)):
            try:
                self.sock.sendall(self.data[index:index + 1])
            except OSError:
                break
            if self.reader.buffer or _readable(self.sock):
                break
            time.sleep(self.pause)
        self.response = self.reader.response()
        self.closed = self.reader.closes()
        self.sock.close()


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def serve_others_while(server, trickler: Trickler) -> int:
    """Fast requests on new connections while the trickler holds a worker; how many succeeded."""
    served = 0
    while trickler.is_alive() and served < 200:
        (response,), reader = exchange(server.address, get("/", "Connection: close"), timeout=5)
        reader.sock.close()
        assert response.status == 200
        served += 1
        time.sleep(0.05)
    return served


@pytest.mark.slow
def test_slow_head_gets_408_while_other_clients_are_served(start_server) -> None:
    server = start_server("recording_app:app", "-w", "2", "--header-timeout", "2")
    workers = server.wait_workers(2)
    trickler = Trickler(server, get("/slow", "X-Padding: " + "p" * 200), pause=0.05)
    trickler.start()
    served = serve_others_while(server, trickler)
    trickler.join(15)
    assert not trickler.is_alive()
    assert served >= 5  # the other worker kept serving throughout
    assert trickler.response.status == 408 and trickler.response.reason == "Request Timeout"
    assert trickler.response.header("Connection") == "close" and trickler.closed
    assert time.monotonic() - trickler.started_at < 10  # the deadline, not a worker kill
    log = server.log()
    assert f"refused request from 127.0.0.1:{trickler.port}: 408 request head not complete in time" in log
    assert "Traceback" not in log and "timed out" not in log
    assert sorted(server.workers()) == sorted(workers)  # nobody was killed


@pytest.mark.slow
def test_stalled_body_gets_408_and_is_never_a_worker_timeout(start_server) -> None:
    # The worker timeout (1 s) is shorter than the body timeout (3 s): a slow client must still
    # get its 408, because waiting on a client is not time spent in the app.
    server = start_server("recording_app:app", "-w", "2", "--body-timeout", "3", "--timeout", "1")
    workers = server.wait_workers(2)
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    trickler = Trickler(server, head + b"only some of it", pause=0.0)
    trickler.start()
    served = serve_others_while(server, trickler)
    trickler.join(15)
    assert not trickler.is_alive() and served >= 5
    assert trickler.response.status == 408 and trickler.closed
    log = server.log()
    assert f"refused request from 127.0.0.1:{trickler.port}: 408 client stalled while sending the body" in log
    assert "Traceback" not in log and "timed out" not in log
    assert sorted(server.workers()) == sorted(workers)
