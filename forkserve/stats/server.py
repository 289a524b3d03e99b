"""The master's stats endpoint: /metrics, /stats, /healthz, /readyz on ``stats_bind``.

Served by the master itself, from the scoreboard, so it answers when every worker is busy or
stuck — exactly when an operator needs it. The master must never block on it, so this is a tiny
non-blocking HTTP/1.0 server driven by the master's select loop: the listening socket and each
client socket are registered as readers (or writers, while a reply is being written) in the
master's ``events.readers`` / ``events.writers``, each with the callback that handles it. A request
is bounded in size (431 beyond), at most MAX_CLIENTS are served at once (stalled ones are
dropped after CLIENT_DEADLINE), and every connection is closed after its one reply.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

from forkserve import __version__
from forkserve.process.logs import error_log
from forkserve.process.sockets import Listener, create_listeners, describe
from forkserve.stats.metrics import PROMETHEUS_CONTENT_TYPE, Master, render_json, render_prometheus, snapshot

MAX_REQUEST = 8192
MAX_CLIENTS = 32
CLIENT_DEADLINE = 5.0
STATS_BACKLOG = 64
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}
_INDEX = (
    "forkserve stats endpoint\n"
    "/metrics  Prometheus text format\n"
    "/stats    JSON: every worker, totals, restarts, listen queues\n"
    "/healthz  liveness: master loop alive and at least one worker\n"
    "/readyz   readiness: workers booted, not draining or shutting down\n"
)

Callbacks = dict[int, Callable[[], None]]
Reply = tuple[int, str, bytes]


def route(master: Master, method: str, path: str) -> Reply:
    """The reply to one request: (status, content type, body)."""
    if method not in ("GET", "HEAD"):
        return 405, "text/plain; charset=utf-8", b"only GET and HEAD\n"
    if path == "/metrics":
        text = render_prometheus(snapshot(master))
        app_metrics = master.telemetry.app_metrics
        if app_metrics is not None:
            try:
                text += app_metrics.render()
            except Exception:  # noqa: BLE001 -- the app's files must not cost forkserve's metrics
                error_log.exception("app metrics: cannot merge the files in %s", app_metrics.directory)
        return 200, PROMETHEUS_CONTENT_TYPE, text.encode()
    if path == "/stats":
        return 200, "application/json", render_json(snapshot(master)).encode()
    if path in ("/healthz", "/readyz"):
        snap = snapshot(master)
        good, reason = snap.liveness() if path == "/healthz" else snap.readiness()
        return (200 if good else 503), "text/plain; charset=utf-8", f"{'ok' if good else 'fail'}: {reason}\n".encode()
    if path == "/":
        return 200, "text/plain; charset=utf-8", _INDEX.encode()
    return 404, "text/plain; charset=utf-8", b"not found; try /metrics /stats /healthz /readyz\n"


def parse_request_line(head: bytes) -> tuple[str, str] | None:
    """(method, path without query) from a request head, or None when it is not HTTP."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/") or not parts[1].startswith(b"/"):
        return None
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    return method, target.split("?", 1)[0]


def build_reply(status: int, content_type: str, body: bytes, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.0 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Server: forkserve/{__version__}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + (b"" if head_only else body)


class _Client:
    """One stats connection: read a bounded head, write one reply, close."""

    __slots__ = ("buffer", "opened", "out", "server", "sock")

    def __init__(self, server: StatsServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.buffer = b""
        self.out = b""
        self.opened = time.monotonic()

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.server.drop(self)
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            end = self.buffer.find(b"\n\n")
        if end < 0:
            if len(self.buffer) > MAX_REQUEST:
                self._reply(build_reply(431, "text/plain", b"request too large\n"))
            return
        if end > MAX_REQUEST:
            self._reply(build_reply(431, "text/plain", b"request too large\n"))
            return
        request = parse_request_line(self.buffer[:end])
        if request is None:
            self._reply(build_reply(400, "text/plain", b"bad request\n"))
            return
        method, path = request
        try:
            status, content_type, body = route(self.server.master, method, path)
        except Exception:  # noqa: BLE001 -- a bug in a report must cost one reply, never the master
            error_log.exception("stats endpoint failed to answer %s %s", method, path)
            status, content_type, body = 500, "text/plain", b"internal error; see the error log\n"
        self._reply(build_reply(status, content_type, body, head_only=method == "HEAD"))

    def _reply(self, data: bytes) -> None:
        self.out = data
        self.server.readers.pop(self.sock.fileno(), None)
        self.on_writable()

    def on_writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.server.drop(self)
            return
        self.out = self.out[sent:]
        fd = self.sock.fileno()
        if self.out:
            self.server.writers[fd] = self.on_writable
            return
        # Lingering close: half-close, then discard what the client still sends until it closes,
        # so unread input (a refused oversized head) cannot turn our close into a reset that
        # destroys the reply before the client reads it.
        self.server.writers.pop(fd, None)
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.server.drop(self)
            return
        self.server.readers[fd] = self.on_lingering

    def on_lingering(self) -> None:
        try:
            if self.sock.recv(65536):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.server.drop(self)


class StatsServer:
    """Accepts stats connections and answers them, from the master's select loop."""

    def __init__(self, listener: Listener, master: Master, readers: Callbacks, writers: Callbacks,
                 adopted: bool = False) -> None:
        self.listener = listener
        self.master = master
        self.readers = readers
        self.writers = writers
        self.adopted = adopted  # handed over by the master this one replaces (USR2)
        self.clients: dict[int, _Client] = {}
        self.resume()

    def pause(self) -> None:
        """Stop accepting (the socket stays open: connections wait for whoever accepts them).
        During a USR2 upgrade only one of the two masters answers."""
        self.readers.pop(self.listener.fileno(), None)

    def resume(self) -> None:
        self.readers[self.listener.fileno()] = self.on_acceptable

    @property
    def address(self) -> str:
        return describe(self.listener)

    def on_acceptable(self) -> None:
        """Take every waiting connection (each becomes a reader)."""
        while True:
            try:
                sock, _ = self.listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                error_log.warning("stats endpoint: accept failed: %s", error)
                return
            sock.setblocking(False)
            self._make_room()
            if len(self.clients) >= MAX_CLIENTS:
                sock.close()
                continue
            client = _Client(self, sock)
            self.clients[sock.fileno()] = client
            self.readers[sock.fileno()] = client.on_readable

    def _make_room(self) -> None:
        """Drop clients that have had CLIENT_DEADLINE seconds and still not finished."""
        expired = time.monotonic() - CLIENT_DEADLINE
        for client in [item for item in self.clients.values() if item.opened < expired]:
            self.drop(client)

    def drop(self, client: _Client) -> None:
        fd = client.sock.fileno()
        self.readers.pop(fd, None)
        self.writers.pop(fd, None)
        self.clients.pop(fd, None)
        client.sock.close()

    def close(self, keep_path: bool = False) -> None:
        """Stop serving. ``keep_path``: leave a unix socket file in place (a USR2 successor
        answers on it now)."""
        for client in list(self.clients.values()):
            self.drop(client)
        self.pause()
        with contextlib.suppress(OSError):
            self.listener.close(remove_path=not keep_path)


def open_stats_server(spec: str | None, master: Master, readers: Callbacks, writers: Callbacks,
                      umask: int = 0, handed_over: int | None = None) -> StatsServer | None:
    """Bind ``stats_bind`` (None when it is not set), or adopt ``handed_over`` — the stats socket
    of the master this one replaces — when it listens on that address. Raises sockets.BindError."""
    if not spec:
        return None
    listeners = create_listeners([spec], STATS_BACKLOG, umask=umask,
                                 handed_over=[handed_over] if handed_over is not None else None)
    listener = listeners[0]
    for unused in listeners[1:]:  # handed over, but stats_bind names another address now
        unused.close(remove_path=False)
    return StatsServer(listener, master, readers, writers, adopted=listener.fileno() == handed_over)
