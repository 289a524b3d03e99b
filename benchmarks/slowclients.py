"""Misbehaving and idle clients, shared by the benchmark scenarios and the chaos suite.

A server with one connection per worker is fast until a few clients are slow: a client that
sends half a request head and stalls, one that reads a large response at a trickle, or one that
keeps an idle keep-alive connection open each hold what they hold for as long as they like.
These classes produce exactly those clients on real sockets, count what happened to them, and
always close every socket they opened (``with`` blocks or ``stop``), within bounded time:

- ``StalledClients``: N connections that send the first half of a request head and stall;
  one the server closes is replaced, so N stay stalled for the whole run.
- ``SlowReaders``: N clients downloading a path over and over, each reading at a fixed rate
  through a small receive window (a narrow link, as a phone on a bad network has).
- ``IdleKeepAliveClients``: N keep-alive connections that each sent one request, got the
  answer, and then idle; ``still_open`` counts those the server has not closed.

``ResponseParser`` reads an HTTP/1.1 response incrementally, for these clients and the chaos
load alike.
"""

from __future__ import annotations

import errno
import resource
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Self

from benchmarks.transports import PLAIN, ClientTransport, HandshakeError, tcp_connect

HOST = "127.0.0.1"
CONNECT_TIMEOUT = 5.0
READ_CHUNK = 16384
# A slow reader's link: a small receive window and an Internet-sized segment. Over loopback the
# kernel otherwise grows the client's window to megabytes and a 1 MiB response is in the client's
# buffer at once: the server never sees a slow client. With this window the server's send queue
# still grows to about 1 MB within a second over loopback, so each 1 MiB download holds a
# one-connection-per-worker server for about a second; on a real slow link it would be longer.
SLOW_READER_RCVBUF = 32768
SLOW_READER_MSS = 1460


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (capped by the hard limit).

    Hundreds of client sockets plus wrk and the servers (which inherit the limit from us) need
    more than the common 1024 default. Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class ProtocolError(ValueError):
    """The bytes received are not an HTTP/1.x response this parser understands."""


class ResponseParser:
    """One HTTP/1.x response, fed in pieces: ``feed`` bytes until ``complete``; ``eof`` at close.

    Handles what the servers measured here send: a Content-Length body, no body (HEAD-less
    1xx/204/304 are not used), or a body delimited by the connection closing. Chunked bodies
    are refused (ProtocolError): no app used here produces one. With ``keep_body=False`` only
    the body's length is kept, so 1 MiB downloads cost no memory.
    """

    def __init__(self, keep_body: bool = True) -> None:
        self.keep_body = keep_body
        self.buffer = b""
        self.status = 0
        self.version = b""
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.length: int | None = None
        self.body_parts: list[bytes] = []
        self.received = 0
        self.complete = False
        self.extra = b""  # bytes after the response (the server sent more than it announced)

    @property
    def started(self) -> bool:
        """True once any byte of the response arrived."""
        return bool(self.buffer) or self.head_done

    @property
    def body(self) -> bytes:
        return b"".join(self.body_parts)

    @property
    def keep_alive(self) -> bool:
        """Whether the server lets the connection carry another request."""
        connection = self.headers.get("connection", "").lower()
        if self.version == b"HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection and self.length is not None

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the connection."""
        if self.complete:
            self.extra += data
            return
        if not self.head_done:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    raise ProtocolError("response head over 64 KiB")
                return
            head, data = self.buffer[:end], self.buffer[end + 4:]
            self.buffer = b""
            self._parse_head(head)
        self._take_body(data)

    def eof(self) -> None:
        """The server closed: completes a close-delimited body; anything else stays incomplete."""
        if self.head_done and self.length is None:
            self.complete = True

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        self.version, self.status = parts[0], int(parts[1])
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            raise ProtocolError("chunked response bodies are not supported by this client")
        if "content-length" in self.headers:
            self.length = int(self.headers["content-length"])
        self.head_done = True
        if self.length == 0:
            self.complete = True

    def _take_body(self, data: bytes) -> None:
        if not data or self.complete:
            if data:
                self.extra += data
            return
        if self.length is not None:
            wanted = self.length - self.received
            data, self.extra = data[:wanted], data[wanted:]
        self.received += len(data)
        if self.keep_body:
            self.body_parts.append(data)
        if self.length is not None and self.received >= self.length:
            self.complete = True


def tally(counts: Counter[str] | Counter[int], prefix: str = ", failures: ") -> str:
    """``counts`` as "3 reset, 1 timeout" after ``prefix``; empty when there is nothing to tell."""
    text = ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()) if count)
    return prefix + text if text else ""


def failure_kind(error: BaseException) -> str:
    """A short name for why a client's exchange failed (the column names the reports use)."""
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(error, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(error, ProtocolError):
        return "bad-response"
    if isinstance(error, HandshakeError):
        return "handshake"
    if isinstance(error, OSError) and error.errno == errno.ECONNABORTED:
        return "reset"
    return type(error).__name__


def server_closed(sock: socket.socket) -> bool:
    """True when the peer has closed (or reset) this plain connection; reads nothing off it."""
    return PLAIN.closed(sock)


# A TCP connection with a receive buffer and segment size set before the handshake (transports.py).
connect = tcp_connect


# -- stalled clients ---------------------------------------------------------------------------


@dataclass
class StalledStats:
    """What happened to the stalled connections over a run."""

    wanted: int
    opened: int = 0
    connect_failures: Counter[str] = field(default_factory=Counter)
    closed_by_server: int = 0
    answered: Counter[int] = field(default_factory=Counter)  # status the server sent before closing
    open_at_end: int = 0

    def summary(self) -> str:
        return (f"{self.wanted} stalled wanted, {self.opened} opened, {self.open_at_end} still stalled "
                f"at the end, {self.closed_by_server} closed by the server"
                + tally(Counter({f"× {status}": count for status, count in self.answered.items()}),
                        ", replies before closing: ")
                + tally(self.connect_failures, ", connect failures: "))


class StalledClients:
    """``count`` connections that each send half a request head and stall, for as long as the
    object lives; one the server closes is replaced at once (a slowloris keeps its count).

    Over another ``transport`` they stall the way it allows (``ClientTransport.open_stalled``):
    half a TLS ClientHello or half a head inside TLS, half a PROXY header or half a head after a
    whole one, half a uwsgi packet.
    """

    def __init__(self, port: int, count: int, host: str = HOST, reconnect: bool = True,
                 transport: ClientTransport = PLAIN) -> None:
        self.port = port
        self.host = host
        self.reconnect = reconnect
        self.transport = transport
        self.stats = StalledStats(count)
        self.selector = selectors.DefaultSelector()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="stalled-clients", daemon=True)
        self.missing = 0

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> Self:
        """Open every connection (within ``timeout``), then watch them from a thread."""
        deadline = time.monotonic() + timeout
        for _ in range(self.stats.wanted):
            if time.monotonic() > deadline or not self._open_one():
                self.missing += 1
        self.thread.start()
        return self

    def _open_one(self) -> bool:
        try:
            sock = self.transport.open_stalled(self.port, self.stats.opened, self.host)
        except OSError as error:
            self.stats.connect_failures[failure_kind(error)] += 1
            return False
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, b"")
        self.stats.opened += 1
        return True

    def _watch(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.selector.select(0.1):
                self._readable(key)
            while self.reconnect and self.missing and not self.stopping.is_set():
                if not self._open_one():
                    self.stopping.wait(0.1)  # the server refuses: try again shortly
                    break
                self.missing -= 1

    def _readable(self, key: selectors.SelectorKey) -> None:
        sock: socket.socket = key.fileobj  # type: ignore[assignment]
        try:
            data = sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError):  # (TLS: a record not whole yet, a session ticket)
            return
        except OSError:
            data = b""
        if data:
            received = key.data + data
            self.selector.modify(sock, selectors.EVENT_READ, received[:32])
            return
        status = key.data[9:12]
        if key.data.startswith(b"HTTP/1.") and status.isdigit():
            self.stats.answered[int(status)] += 1
        self.stats.closed_by_server += 1
        self.selector.unregister(sock)
        sock.close()
        self.missing += 1

    def stop(self) -> StalledStats:
        """Close every connection; the figures so far."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(10)
        keys = list(self.selector.get_map().values())
        self.stats.open_at_end = len(keys)
        for key in keys:
            self.selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()
        return self.stats


# -- slow readers ------------------------------------------------------------------------------


@dataclass
class SlowReaderStats:
    """Downloads the slow readers finished, and how the others ended."""

    readers: int
    completed: int = 0
    bytes_read: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    unfinished_at_stop: int = 0

    def summary(self) -> str:
        return (f"{self.readers} slow readers: {self.completed} downloads completed "
                f"({self.bytes_read / 1e6:.1f} MB read), {self.unfinished_at_stop} unfinished at the end"
                + tally(self.failures))


class ClientThreads:
    """``count`` client threads, each running ``self._run(index)`` until ``stop``: the common
    part of the slow readers and the chaos load (start, and a stop with a deadline)."""

    def __init__(self, count: int, name: str) -> None:
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(index,), name=f"{name}-{index}", daemon=True)
                        for index in range(count)]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> object:
        raise NotImplementedError

    def _run(self, index: int) -> None:
        raise NotImplementedError

    def _join(self, timeout: float) -> list[str]:
        """Tell every thread to stop and wait for them, ``timeout`` seconds at most in all;
        the names of those still running (none, normally: each checks often)."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread.name for thread in self.threads if thread.is_alive()]


class SlowReaders(ClientThreads):
    """``count`` clients that download ``path`` again and again, each reading ``rate`` bytes
    per second through a narrow receive window (see SLOW_READER_RCVBUF), on keep-alive
    connections when the server allows them."""

    def __init__(self, port: int, count: int, path: str = "/download", rate: int = 100_000,
                 expected_length: int | None = None, host: str = HOST, stall_timeout: float = 15.0,
                 transport: ClientTransport = PLAIN) -> None:
        self.port = port
        self.host = host
        self.rate = rate
        self.expected_length = expected_length
        self.stall_timeout = stall_timeout
        self.transport = transport  # (over TLS the worker encrypts what it would have sendfile'd)
        self.request = transport.request("GET", path)
        self.stats = SlowReaderStats(count)
        super().__init__(count, "slow-reader")

    def stop(self, timeout: float = 10.0) -> SlowReaderStats:
        """Stop every reader (each ends its download where it is) and close their sockets."""
        self._join(timeout)
        return self.stats

    def _count(self, outcome: str, read: int) -> None:
        with self.lock:
            self.stats.bytes_read += read
            if outcome == "completed":
                self.stats.completed += 1
            elif outcome == "unfinished":
                self.stats.unfinished_at_stop += 1
            else:
                self.stats.failures[outcome] += 1

    def _run(self, index: int) -> None:
        sock: socket.socket | None = None
        try:
            while not self.stopping.is_set():
                if sock is None:
                    try:
                        sock = self.transport.connect(self.port, self.stall_timeout, self.host,
                                                      SLOW_READER_RCVBUF, SLOW_READER_MSS)
                    except OSError as error:
                        self._count(failure_kind(error), 0)
                        self.stopping.wait(0.2)
                        continue
                outcome, read, reusable = self._download(sock)
                self._count(outcome, read)
                if not reusable:
                    sock.close()
                    sock = None
        finally:
            if sock is not None:
                sock.close()

    def _download(self, sock: socket.socket) -> tuple[str, int, bool]:
        """One request read at the set rate: (outcome, bytes read, connection reusable)."""
        response = ResponseParser(keep_body=False)
        try:
            sock.sendall(self.request)
            started = time.monotonic()
            read = 0
            while not response.complete:
                if self.stopping.is_set():
                    return "unfinished", read, False
                data = sock.recv(READ_CHUNK)
                if not data:
                    response.eof()
                    if not response.complete:
                        return "reset", read, False
                    break
                response.feed(data)
                read += len(data)
                ahead = read / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    self.stopping.wait(ahead)
        except (OSError, ProtocolError) as error:
            return failure_kind(error), 0, False
        if response.status != 200:
            return f"status {response.status}", read, False
        if self.expected_length is not None and response.received != self.expected_length:
            return "wrong length", read, False
        return "completed", read, response.keep_alive


# -- idle keep-alive connections ------------------------------------------------------------------


@dataclass
class IdleStats:
    """The idle keep-alive connections: how many were set up, and how many are still open."""

    wanted: int
    answered: int = 0
    answered_close: int = 0  # the answer said Connection: close: closed at once, not idle
    failures: Counter[str] = field(default_factory=Counter)
    open_at_end: int = 0

    def summary(self) -> str:
        return (f"{self.wanted} idle keep-alive connections wanted: {self.answered} answered "
                f"({self.answered_close} with Connection: close, so closed), {self.open_at_end} still "
                f"open at the end" + tally(self.failures))


class IdleKeepAliveClients:
    """``count`` keep-alive connections that each send one request, read the whole answer and
    then stay idle. All are opened and asked at once, so a server that serves one connection at
    a time answers them in turn instead of waiting out each one's idle timeout."""

    def __init__(self, port: int, count: int, path: str = "/", host: str = HOST) -> None:
        self.port = port
        self.host = host
        self.request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        self.stats = IdleStats(count)
        self.sockets: list[socket.socket] = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> Self:
        """Open, ask and read every connection's answer, all within ``timeout`` seconds.

        A connection whose answer says ``Connection: close`` (or that the server closes) is
        closed at once, as any HTTP client does: it is not an idle keep-alive connection, and a
        server that lingers on its half-closed connections (gunicorn waits up to 2 s for the
        client's FIN) would otherwise be charged for a client that never hangs up.
        """
        deadline = time.monotonic() + timeout
        pending: dict[socket.socket, ResponseParser] = {}
        with selectors.DefaultSelector() as selector:
            for _ in range(self.stats.wanted):
                try:
                    sock = connect(self.port, host=self.host)
                    sock.sendall(self.request)
                except OSError as error:
                    self.stats.failures[failure_kind(error)] += 1
                    continue
                sock.setblocking(False)
                pending[sock] = ResponseParser()
                selector.register(sock, selectors.EVENT_READ)
            while pending and time.monotonic() < deadline:
                for key, _ in selector.select(min(1.0, max(0.0, deadline - time.monotonic()))):
                    sock = key.fileobj  # type: ignore[assignment]
                    kept = self._read_answer(sock, pending[sock])  # type: ignore[index]
                    if kept is None:
                        continue
                    selector.unregister(sock)
                    del pending[sock]  # type: ignore[arg-type]
                    if kept:
                        self.sockets.append(sock)  # type: ignore[arg-type]
                    else:
                        sock.close()
            for sock in pending:
                sock.close()
        if pending:
            self.stats.failures["timeout"] += len(pending)
        return self

    def _read_answer(self, sock: socket.socket, response: ResponseParser) -> bool | None:
        """Read what is there: None while the answer is incomplete, then whether the connection
        stays open (answered, keep-alive) or not (answered with close, or failed)."""
        try:
            data = sock.recv(65536)
            if data:
                response.feed(data)
            else:
                response.eof()
        except BlockingIOError:
            return None
        except (OSError, ProtocolError) as error:
            self.stats.failures[failure_kind(error)] += 1
            return False
        if response.complete:
            self.stats.answered += 1
            if not response.keep_alive or not data:
                self.stats.answered_close += 1
                return False
            return True
        if not data:
            self.stats.failures["reset"] += 1
            return False
        return None

    def still_open(self) -> int:
        """How many of the connections the server has not closed (or reset) by now."""
        return sum(not server_closed(sock) for sock in self.sockets)

    def stop(self) -> IdleStats:
        """Count what is still open, then close everything."""
        if self.sockets:
            self.stats.open_at_end = self.still_open()
        for sock in self.sockets:
            sock.close()
        self.sockets = []
        return self.stats
