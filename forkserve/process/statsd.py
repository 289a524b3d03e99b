"""StatsD (and DogStatsD) metrics with gunicorn's names, so its dashboards keep working.

``statsd_host`` (``HOST:PORT`` or ``unix:PATH``) turns it on. Every process sends its own facts
on its own datagram socket, as gunicorn does:

- each worker, per request (one datagram, newline-separated lines, after the response is sent):
  ``gunicorn.requests`` (counter), ``gunicorn.request.duration`` (timer, ms),
  ``gunicorn.request.status.<code>`` (counter) — gunicorn's names — and forkserve's
  ``forkserve.request.queue_time`` (timer, ms) and ``forkserve.requests.shed`` (counter, only
  for a request shed by ``max_queue_time``);
- every process, per error-log record at warning level and above: ``gunicorn.log.warning``,
  ``gunicorn.log.error``, ``gunicorn.log.critical``, and ``gunicorn.log.exception`` for records
  that carry a traceback (counters);
- the master, once a second: ``gunicorn.workers`` (gauge), ``forkserve.workers.busy``,
  ``forkserve.workers.target``, ``forkserve.queue_depth`` (gauges; ``gunicorn.backlog`` as a
  histogram too with ``enable_backlog_metric``), and ``forkserve.restarts.<reason>`` (counters,
  as restarts happen).

Every name gets ``statsd_prefix`` (a '.' added when missing) and every line ``|#`` and the
``dogstatsd_tags`` when set. Sending never blocks and never raises: the socket is non-blocking
and connected lazily in the process that sends (so a worker never shares its master's); a send
that fails — nothing listening, a full buffer, an unresolvable host — drops the datagram and is
logged at most once a minute per process.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

error_log = logging.getLogger("forkserve.error")

QUEUE_TIME_KEY = "forkserve.queue_time"
SHED_KEY = "forkserve.shed"
COMPLAINT_INTERVAL = 60.0  # seconds between two log lines about failed sends, per process
MAX_DATAGRAM = 8192
_LOG_LEVELS = ((logging.CRITICAL, "critical"), (logging.ERROR, "error"), (logging.WARNING, "warning"))


def normalize_prefix(prefix: str) -> str:
    """gunicorn's rule: a non-empty prefix ends with exactly one '.'."""
    prefix = prefix.rstrip(".")
    return f"{prefix}." if prefix else ""


class StatsdClient:
    """A non-blocking StatsD sender; one per process (re-made after fork on first use)."""

    def __init__(self, address: str, prefix: str = "", tags: str = "") -> None:
        self.address = address
        self.prefix = normalize_prefix(prefix)
        self.suffix = f"|#{tags}" if tags else ""
        self.sock: socket.socket | None = None
        self.pid = 0
        self.last_complaint = -COMPLAINT_INTERVAL
        self.dropped = 0

    # -- building lines ---------------------------------------------------------------------

    def line(self, name: str, value: float, kind: str) -> str:
        """One StatsD line, in gunicorn's format (counters carry ``|@1.0``)."""
        rate = "|@1.0" if kind == "c" else ""
        return f"{self.prefix}{name}:{_value(value)}|{kind}{rate}{self.suffix}"

    def counter(self, name: str, value: int = 1) -> str:
        return self.line(name, value, "c")

    def gauge(self, name: str, value: float) -> str:
        return self.line(name, value, "g")

    def timer(self, name: str, milliseconds: float) -> str:
        return self.line(name, milliseconds, "ms")

    def histogram(self, name: str, value: float) -> str:
        return self.line(name, value, "h")

    # -- sending ----------------------------------------------------------------------------

    def send(self, lines: list[str]) -> None:
        """Send lines, packed into as few datagrams as fit; never blocks, never raises."""
        payload: list[str] = []
        size = 0
        for line in lines:
            if payload and size + len(line) + 1 > MAX_DATAGRAM:
                self._send("\n".join(payload))
                payload, size = [], 0
            payload.append(line)
            size += len(line) + 1
        if payload:
            self._send("\n".join(payload))

    def _send(self, text: str) -> None:
        try:
            sock = self._socket()
            sock.send(text.encode("ascii", "replace"), socket.MSG_DONTWAIT)
        except Exception as error:  # noqa: BLE001 -- metrics must never cost a request
            self._dropped(error)

    def _socket(self) -> socket.socket:
        pid = os.getpid()
        if self.sock is None or self.pid != pid:
            if self.sock is not None and self.pid == pid:
                self.sock.close()
            self.sock = None  # (a forked child leaves its parent's socket to the parent)
            self.pid = pid
            self.sock = _connect(self.address)
        return self.sock

    def _dropped(self, error: BaseException) -> None:
        self.dropped += 1
        if isinstance(error, OSError) and self.sock is not None and error.errno not in (None, 11):
            self.sock.close()  # a refused or unreachable destination: connect afresh next time
            self.sock = None
        now = time.monotonic()
        if now - self.last_complaint >= COMPLAINT_INTERVAL:
            self.last_complaint = now
            # Not through the error log's own counter handler: a complaint about StatsD must not
            # itself be sent to StatsD.
            error_log.info("statsd: cannot send to %s: %s (%d datagram(s) dropped so far in process %d; "
                           "next report in %.0fs at the earliest)", self.address, error, self.dropped,
                           os.getpid(), COMPLAINT_INTERVAL)

    def close(self) -> None:
        if self.sock is not None and self.pid == os.getpid():
            self.sock.close()
        self.sock = None


def _value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def _connect(address: str) -> socket.socket:
    """A connected, non-blocking datagram socket to ``address`` (``unix:PATH`` or ``HOST:PORT``)."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        target: Any = address[5:]
    else:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        family, kind, proto, _, target = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, kind | socket.SOCK_CLOEXEC, proto)
    sock.setblocking(False)
    try:
        sock.connect(target)
    except OSError:
        sock.close()
        raise
    return sock


# -- the worker's side: one datagram per request ---------------------------------------------------


AfterRequest = Any  # (environ, response, started) -> None, as forkserve.http.accesslog.AfterRequest


def after_request_hook(client: StatsdClient | None, then: AfterRequest | None = None) -> AfterRequest | None:
    """The after-request callback sending one request's metrics, then calling ``then``. Without
    a client it is just ``then``: StatsD off costs a request nothing."""
    if client is None:
        return then
    requests_line = client.counter("gunicorn.requests")
    shed_line = client.counter("forkserve.requests.shed")

    def send_metrics(environ: dict[str, Any], response: Any, started: float) -> None:
        lines = [
            client.timer("gunicorn.request.duration", (time.time() - started) * 1000.0),
            requests_line,
            client.counter(f"gunicorn.request.status.{response.status_code or 0}"),
            client.timer("forkserve.request.queue_time", environ.get(QUEUE_TIME_KEY, 0.0) * 1000.0),
        ]
        if environ.get(SHED_KEY):
            lines.append(shed_line)
        client.send(lines)
        if then is not None:
            then(environ, response, started)

    return send_metrics


# -- every process: error-log records counted -------------------------------------------------------


class LogLevelCounter(logging.Handler):
    """Counts error-log records at warning and above as gunicorn's ``gunicorn.log.<level>``."""

    def __init__(self, client: StatsdClient) -> None:
        super().__init__(logging.WARNING)
        self.client = client

    def emit(self, record: logging.LogRecord) -> None:
        name = next((label for level, label in _LOG_LEVELS if record.levelno >= level), "warning")
        lines = [self.client.counter(f"gunicorn.log.{name}")]
        if record.exc_info:
            lines.append(self.client.counter("gunicorn.log.exception"))
        self.client.send(lines)

    def close(self) -> None:
        """Removed from the error log (logs.setup on HUP): its socket goes with it."""
        self.client.close()
        super().close()


def install_log_counter(client: StatsdClient | None, logger: logging.Logger = error_log) -> None:
    """Count the error log's warnings and errors (a HUP's new client replaces the old one)."""
    for handler in [item for item in logger.handlers if isinstance(item, LogLevelCounter)]:
        logger.removeHandler(handler)
        handler.close()
    if client is not None:
        logger.addHandler(LogLevelCounter(client))


def client_for(config: Any) -> StatsdClient | None:
    """The client ``statsd_host`` asks for (None when it is not set)."""
    if not config.statsd_host:
        return None
    return StatsdClient(config.statsd_host, config.statsd_prefix, config.dogstatsd_tags)
