"""The chaos load: threads of raw-socket clients whose every answer is checked to the byte.

Each thread opens a connection either for one request (``Connection: close``) or for a run of
keep-alive requests, and sends GETs and POSTs (bodies from empty to 64 KiB of random bytes),
each with a unique id. The echo app (``benchmarks/apps/chaos_app.py``) answers with the id, the
digest and the body, so an answer is correct only if it is exactly the one expected.

Every request ends as one outcome:

- ``ok`` — status 200 and exactly the expected body;
- ``refused`` / ``no-connection`` / ``handshake-failed`` — the connection was refused (or could
  not be made, or its TLS handshake failed) before the request was sent: nothing was lost, the
  client knows it can retry;
- a loss: ``reset`` (the connection broke after the request was sent, nothing came back),
  ``reset-on-reuse`` (the same on a keep-alive connection that had already served a request:
  the server closed it as the request arrived), ``truncated`` (part of an answer, then close),
  ``timeout`` (no complete answer within the request timeout), ``bad-status``, ``wrong-body``,
  ``wrong-address`` (the app saw another client address than the one the PROXY header or uwsgi
  packet named, or than 127.0.0.1 without them), ``bad-response`` (not HTTP).

The load speaks one transport (``benchmarks/transports.py``): plain HTTP, TLS, HTTP after a
PROXY v1 header naming a made-up client per connection, or uwsgi packets (one request per
connection: the transport has no keep-alive).

Before reusing a keep-alive connection a client looks whether the server has closed it (as
HTTP clients do) and opens a new one if so: that is no loss. Every wait is bounded by the
request timeout; ``stop`` waits for the requests in flight to end, within that timeout.
"""

from __future__ import annotations

import random
import socket
import statistics
import time
from collections import Counter
from dataclasses import dataclass

from benchmarks.apps.chaos_app import expected_answer
from benchmarks.slowclients import ClientThreads, ProtocolError, ResponseParser, failure_kind
from benchmarks.transports import PLAIN, Client, ClientTransport, HandshakeError, made_up_client

OK = "ok"
REFUSED = "refused"
NO_CONNECTION = "no-connection"
HANDSHAKE_FAILED = "handshake-failed"
NOT_SENT = (REFUSED, NO_CONNECTION, HANDSHAKE_FAILED)
LOSS_KINDS = ("reset", "reset-on-reuse", "truncated", "timeout", "bad-status", "wrong-body",
              "wrong-address", "bad-response")
BODY_SIZES = (0, 0, 1, 100, 1000, 4096, 16384, 65536)
KEEPALIVE_RUN = (2, 20)  # requests per keep-alive connection, drawn from this range
REFUSED_PAUSE = 0.02  # a thread whose connection was refused waits this long before the next try


@dataclass(frozen=True)
class Record:
    """One request's fate."""

    outcome: str
    started: float  # time.monotonic() when the client began (connect included)
    finished: float
    method: str
    reused: bool  # sent on a keep-alive connection that had already carried a request

    @property
    def latency(self) -> float:
        return self.finished - self.started


@dataclass(frozen=True)
class Summary:
    """A load's records counted: what a scenario's row shows."""

    sent: int  # requests written to a connection (everything but refused / no-connection)
    ok: int
    lost: Counter[str]
    refused: int
    no_connection: int
    handshake_failed: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())

    @property
    def not_sent(self) -> int:
        """Connections that failed before their request was written (refused, not made, TLS)."""
        return self.refused + self.no_connection + self.handshake_failed


def summarize(records: list[Record]) -> Summary:
    """Count the outcomes; latency percentiles over the correct answers."""
    outcomes = Counter(record.outcome for record in records)
    latencies = sorted(record.latency * 1000 for record in records if record.outcome == OK)

    def percentile(share: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(share * len(latencies)))]

    lost = Counter({kind: count for kind, count in outcomes.items() if kind != OK and kind not in NOT_SENT})
    return Summary(
        sent=len(records) - sum(outcomes[kind] for kind in NOT_SENT), ok=outcomes[OK], lost=lost,
        refused=outcomes[REFUSED], no_connection=outcomes[NO_CONNECTION],
        handshake_failed=outcomes[HANDSHAKE_FAILED],
        p50_ms=statistics.median(latencies) if latencies else float("nan"), p99_ms=percentile(0.99),
        max_ms=latencies[-1] if latencies else float("nan"),
    )


class ChaosLoad(ClientThreads):
    """``threads`` client threads against ``port`` until ``stop``; ``records`` holds every
    request's outcome, in the order they ended."""

    def __init__(self, port: int, threads: int = 8, request_timeout: float = 10.0, seed: int = 1,
                 host: str = "127.0.0.1", transport: ClientTransport = PLAIN) -> None:
        self.port = port
        self.host = host
        self.transport = transport
        self.request_timeout = request_timeout
        self.seed = seed
        self.records: list[Record] = []
        super().__init__(threads, "chaos-client")

    def stop(self) -> list[str]:
        """Stop the clients (each finishes the request in hand, within the request timeout).
        Returns the names of threads still running past that (none, normally)."""
        return self._join(self.request_timeout + 5)

    def snapshot(self) -> list[Record]:
        with self.lock:
            return list(self.records)

    def _record(self, outcome: str, started: float, method: str, reused: bool) -> None:
        with self.lock:
            self.records.append(Record(outcome, started, time.monotonic(), method, reused))

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        transport = self.transport
        sock: socket.socket | None = None
        client: Client = ("", 0)  # who the connection's PROXY header or uwsgi packets say asks
        left = 0  # requests still to send on this connection
        sequence = 0
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                reused = sock is not None
                if sock is not None and transport.closed(sock):
                    sock.close()
                    sock, reused = None, False
                if sock is None:
                    keep_alive = transport.keep_alive and rng.random() < 0.5
                    left = rng.randint(*KEEPALIVE_RUN) if keep_alive else 1
                    client = made_up_client(rng)
                    try:
                        sock = transport.connect(self.port, self.request_timeout, self.host, client=client)
                    except OSError as error:
                        kind = (REFUSED if isinstance(error, ConnectionRefusedError)
                                else HANDSHAKE_FAILED if isinstance(error, HandshakeError) else NO_CONNECTION)
                        self._record(kind, started, "-", False)
                        self.stopping.wait(REFUSED_PAUSE)
                        continue
                sequence += 1
                left -= 1
                method = "POST" if rng.random() < 0.5 else "GET"
                body = rng.randbytes(rng.choice(BODY_SIZES)) if method == "POST" else b""
                outcome, keep = self._exchange(sock, f"{index}-{sequence}", method, body, left == 0, reused,
                                               client)
                self._record(outcome, started, method, reused)
                if not keep:
                    sock.close()
                    sock = None
        finally:
            if sock is not None:
                sock.close()

    def _exchange(self, sock: socket.socket, request_id: str, method: str, body: bytes, last: bool,
                  reused: bool, client: Client) -> tuple[str, bool]:
        """Send one request and check its answer: (outcome, connection reusable)."""
        headers = (("Content-Type", "application/octet-stream"),) if method == "POST" else ()
        request = self.transport.request(method, "/echo", f"id={request_id}", body, close=last, client=client,
                                         headers=headers, host_header="chaos")
        response = ResponseParser()
        deadline = time.monotonic() + self.request_timeout
        try:
            sock.settimeout(self.request_timeout)
            sock.sendall(request)
            while not response.complete:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no complete answer in time")
                sock.settimeout(left)
                data = sock.recv(65536)
                if not data:
                    response.eof()
                    if not response.complete:
                        raise ConnectionResetError("closed before the answer was complete")
                    break
                response.feed(data)
        except (OSError, ProtocolError) as error:
            kind = failure_kind(error)
            if kind == "reset" and response.started:
                kind = "truncated"
            elif kind == "reset" and reused:
                kind = "reset-on-reuse"
            elif kind not in LOSS_KINDS:
                kind = "reset" if isinstance(error, OSError) else "bad-response"
            return kind, False
        if response.status != 200:
            return "bad-status", False
        if response.body != expected_answer(request_id, body) or response.extra:
            return "wrong-body", False
        if response.headers.get("x-remote-addr") != self.transport.expected_remote_addr(client, self.host):
            return "wrong-address", False
        return OK, response.keep_alive and not last
