"""The request body as ``wsgi.input``: streamed from the socket through h11's framing.

Bytes are read only when the app asks for them, so an upload of any size costs one buffer, and
``Expect: 100-continue`` is answered at the app's first read and never if it does not read. The
body ends where the framing says (Content-Length or the last chunk), so reading past it returns
b"" (``wsgi.input_terminated``). The size limit is checked up front against Content-Length by the
connection, and here against the bytes of a chunked body.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import h11

from forkserve.http.errors import ClientDisconnected, ClientTimeout, HttpError
from forkserve.http.head import RECV_SIZE, RecvTimeout

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class RequestBody:
    """A file-like, read-only view of the request body (PEP 3333 ``wsgi.input``)."""

    __slots__ = (
        "_buffer",
        "_continue_pending",
        "_eof",
        "_idle_timeout",
        "_limit",
        "_parser",
        "_received",
        "_sock",
        "_timeouts",
        "failure",
    )

    def __init__(
        self,
        parser: h11.Connection,
        sock: socket.socket,
        timeouts: RecvTimeout,
        idle_timeout: float,
        limit: int,
        has_body: bool,
        expect_continue: bool,
    ) -> None:
        self._parser = parser
        self._sock = sock
        self._timeouts = timeouts
        self._idle_timeout = idle_timeout
        self._buffer = bytearray()
        self._eof = not has_body
        self._received = 0
        self._limit = limit
        self._continue_pending = expect_continue and has_body
        self.failure: HttpError | None = None

    @property
    def complete(self) -> bool:
        """True when the whole body has come off the wire (read by the app or drained)."""
        return self._eof

    @property
    def continue_pending(self) -> bool:
        """True when the client waits for 100 Continue that was never sent (app did not read)."""
        return self._continue_pending

    @property
    def received(self) -> int:
        return self._received

    def _fail(self, error: HttpError) -> HttpError:
        self.failure = error
        self._eof = True
        return error

    def _more(self) -> bool:
        """Append the next piece of body to the buffer; False at the end of the body."""
        if self._eof:
            return False
        if self._continue_pending:
            self._continue_pending = False
            self._sock.sendall(CONTINUE)
        parser = self._parser
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as error:
                raise self._fail(HttpError(400, f"bad request body framing: {error}")) from None
            if type(event) is h11.Data:
                self._received += len(event.data)
                if self._limit and self._received > self._limit:
                    raise self._fail(HttpError(413, f"request body larger than {self._limit} bytes"))
                self._buffer += event.data
                return True
            if type(event) is h11.EndOfMessage:
                self._eof = True
                return False
            if event is h11.NEED_DATA:
                self._timeouts.set(self._idle_timeout)
                try:
                    data = self._sock.recv(RECV_SIZE)
                except (BlockingIOError, TimeoutError):
                    raise self._fail(ClientTimeout("client stalled while sending the body")) from None
                except (ConnectionResetError, BrokenPipeError) as error:
                    self._eof = True
                    raise ClientDisconnected(str(error)) from None
                if not data:
                    self._eof = True
                    raise ClientDisconnected("client closed the connection before the body ended")
                parser.receive_data(data)
                continue
            raise self._fail(HttpError(400, f"unexpected {type(event).__name__} in request body"))

    def _take(self, size: int) -> bytes:
        buffer = self._buffer
        result = bytes(buffer[:size])
        del buffer[:size]
        return result

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that remain when size is negative or None)."""
        if size is None or size < 0:
            while self._more():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._more():
            pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        """One line including its b'\\n', or at most ``size`` bytes of it."""
        limit = -1 if size is None else size
        start = 0
        while True:
            newline = self._buffer.find(b"\n", start)
            if newline >= 0:
                end = newline + 1
                break
            if 0 <= limit <= len(self._buffer):
                end = limit
                break
            start = len(self._buffer)
            if not self._more():
                end = len(self._buffer)
                break
        if 0 <= limit < end:
            end = limit
        return self._take(end)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """Lines until the end, or until about ``hint`` bytes have been read."""
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def drain(self, budget: int) -> bool:
        """Read and discard what the app left unread, up to ``budget`` bytes; True if it all came."""
        self._buffer.clear()
        if self._continue_pending:
            return False  # the client waits for our go-ahead; reading would only stall
        start = self._received
        while self._received - start <= budget:
            try:
                if not self._more():
                    return True
            except (HttpError, ClientDisconnected):
                return False
            self._buffer.clear()
        return False
