"""A newcomer during a run: does a client that connects now get an answer, and how soon?

wrk's figures describe only the requests that were answered. A server whose workers each hold
one keep-alive connection for as long as its client keeps sending (uWSGI's ``--http11-socket``,
one connection per process) serves the first clients flat out and never answers the others:
wrk shows a high req/s, a low p99 and no error, because the starved connections' requests never
complete and wrk 4.1 counts no timeout for them. So every measured run has a prober beside wrk:
one fresh connection at a time, a new one every ``PROBE_INTERVAL_S``, each sending one request
with ``Connection: close`` and timing the answer. A probe not answered within ``PATIENCE_S`` is
given up and counted as unanswered; one still waiting when the run ends, for less than that, was
merely in flight and is not counted at all.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from benchmarks.transports import PLAIN, ClientTransport

HOST = "127.0.0.1"
PROBE_INTERVAL_S = 0.25
PATIENCE_S = 2.0
POLL_S = 0.05


@dataclass(frozen=True)
class ProbeResult:
    """What the newcomers saw over one run."""

    sent: int
    answered: int
    slowest_us: float  # the slowest answered probe's wait (0 when none was answered)


class Prober:
    """Probes ``path`` on ``port`` from ``start()`` until ``stop()``, one connection at a time."""

    def __init__(self, port: int, path: str = "/", transport: ClientTransport = PLAIN) -> None:
        """``transport``: what the newcomers speak (over TLS each pays a full handshake, as a new
        browser does)."""
        self.port = port
        self.transport = transport
        self.request = transport.request("GET", path, close=True, headers=(("User-Agent", "bench-probe"),),
                                         host_header="probe")
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-probe", daemon=True)
        self._waits: list[float] = []
        self._unanswered = 0

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> ProbeResult:
        """End probing (within about POLL_S) and say what the probes saw."""
        self._stopping.set()
        self._thread.join(5)
        answered = len(self._waits)
        return ProbeResult(answered + self._unanswered, answered,
                           max(self._waits, default=0.0) * 1e6)

    def _run(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            answered = self._probe()
            waited = time.monotonic() - started
            if answered:
                self._waits.append(waited)
            elif waited >= PATIENCE_S:
                self._unanswered += 1
            self._stopping.wait(max(0.0, PROBE_INTERVAL_S - waited))

    def _probe(self) -> bool:
        """One request on a new connection: True once a status line came back, False when none
        did within PATIENCE_S (or the run ended first)."""
        deadline = time.monotonic() + PATIENCE_S
        try:
            with self.transport.connect(self.port, PATIENCE_S, HOST) as sock:
                sock.sendall(self.request)
                sock.settimeout(POLL_S)
                received = b""
                while not self._stopping.is_set() and time.monotonic() < deadline:
                    try:
                        chunk = sock.recv(4096)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    received += chunk
                    if b"\r\n" in received:
                        return received.startswith(b"HTTP/1.")
        except OSError:
            pass
        return False
