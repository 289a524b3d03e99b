"""A connection's response bytes that the client has not taken yet.

The app's response is sent at once as far as the client takes it (one non-blocking ``send``; for
an ordinary response that is all of it). What is left is kept here, in order — bytes, and spans
of regular files for ``wsgi.file_wrapper`` — and the worker's loop flushes it while the app runs
the next request, so a slow reader costs a buffer, not the worker. The buffer is capped: past
``cap`` bytes the app's write waits until the client has taken enough (backpressure, bounded
memory), marked on the scoreboard as a client wait, for at most ``send_timeout`` without
progress.
"""

from __future__ import annotations

import os
import select
import socket
from collections import deque

from forkserve.http.errors import ClientDisconnected
from forkserve.http.response import ClientTooSlow
from forkserve.http.waiting import ClientWaits
from forkserve.worker.tls import TlsStream

SENDFILE_CHUNK = 1 << 30


class FileSpan:
    """Part of a regular file still to send: our own descriptor (a dup), offset, end."""

    __slots__ = ("end", "fd", "offset")

    def __init__(self, fd: int, offset: int, end: int) -> None:
        self.fd = fd
        self.offset = offset
        self.end = end


class Outbound:
    """The :class:`~forkserve.http.response.Sink` of one connection (its socket non-blocking)."""

    __slots__ = ("cap", "pending", "queue", "send_timeout", "sock", "tls", "waits")

    def __init__(self, sock: socket.socket, cap: int, send_timeout: float, waits: ClientWaits | None,
                 tls: TlsStream | None = None) -> None:
        self.sock = sock
        self.tls = tls  # set: application bytes are encrypted on their way in
        self.cap = cap
        self.send_timeout = send_timeout
        self.waits = waits
        self.queue: deque[bytes | memoryview | FileSpan] = deque()
        self.pending = 0  # bytes (not file spans) in the queue

    def __bool__(self) -> bool:
        """Is anything left to send?"""
        return bool(self.queue)

    def send(self, data: bytes) -> None:
        """Send now what the client takes; keep the rest. Waits only past the cap."""
        if self.tls is not None:
            data = self.tls.encrypt(data)
        self.send_raw(data)

    def send_raw(self, data: bytes) -> None:
        """``send`` for bytes already as they go on the wire (TLS records, a plain-HTTP refusal)."""
        if not self.queue:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as error:
                raise ClientDisconnected(str(error)) from None
            if sent == len(data):
                return
            data = memoryview(data)[sent:]  # type: ignore[assignment]
        self.queue.append(data)
        self.pending += len(data)
        if self.pending > self.cap:
            self._wait_until_below(self.cap)

    def sendfile(self, fd: int, offset: int, length: int) -> None:
        """Queue part of a regular file (sent with os.sendfile); the caller may close ``fd``.
        Over TLS the file is read and encrypted instead (sendfile would send it in the clear)."""
        if self.tls is not None:
            end = offset + length
            while offset < end:
                chunk = os.pread(fd, min(end - offset, 1 << 18), offset)
                if not chunk:
                    raise ClientDisconnected("the file being sent became shorter")
                self.send(chunk)
                offset += len(chunk)
            return
        self.queue.append(FileSpan(os.dup(fd), offset, offset + length))
        self.flush()

    def flush(self) -> bool:
        """Send what the client takes now, without waiting; True when nothing is left."""
        queue = self.queue
        sock = self.sock
        while queue:
            item = queue[0]
            if type(item) is FileSpan:
                if not self._send_file(item):
                    return False
                queue.popleft()
                os.close(item.fd)
                continue
            try:
                sent = sock.send(item)
            except BlockingIOError:
                return False
            except OSError as error:
                raise ClientDisconnected(str(error)) from None
            self.pending -= sent
            if sent < len(item):
                queue[0] = memoryview(item)[sent:]
                return False
            queue.popleft()
        return True

    def _send_file(self, span: FileSpan) -> bool:
        """Advance one file span; True once it is all sent."""
        while span.offset < span.end:
            try:
                sent = os.sendfile(self.sock.fileno(), span.fd, span.offset, min(span.end - span.offset, SENDFILE_CHUNK))
            except BlockingIOError:
                return False
            except OSError as error:
                raise ClientDisconnected(str(error)) from None
            if sent == 0:  # the file shrank under us: the framing promised more; the connection must end
                raise ClientDisconnected("the file being sent became shorter")
            span.offset += sent
        return True

    def _wait_until_below(self, limit: int) -> None:
        """Block (the app's write) until at most ``limit`` bytes are left, the client taking
        some within every ``send_timeout``."""
        waits = self.waits
        if waits is not None:
            waits.begin()
        try:
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLOUT)
            while True:
                self.flush()
                if self.pending <= limit:
                    return
                if not poller.poll(self.send_timeout * 1000):
                    raise ClientTooSlow("client did not read the response in time")
        finally:
            if waits is not None:
                waits.end()

    def discard(self) -> None:
        """Drop what is left (the connection is closing), releasing file descriptors."""
        for item in self.queue:
            if type(item) is FileSpan:
                os.close(item.fd)
        self.queue.clear()
        self.pending = 0
