"""Request body framing (sans-I/O), and the body as a streaming ``wsgi.input``.

h11 parses the request head; the body framing is decoded here. h11's chunked reader is lenient
in ways a server behind a proxy must not be (it takes any bytes as a chunk extension, accepts bare
LF in trailers, waits forever for a CRLF after a last chunk ended with bare LF, and lets a
trailer carry Content-Length). Every chunk line is checked strictly, partial lines too, so a
malformed body gets a 400 at once instead of a wait until the idle timeout.

:class:`BodyDecoder` takes bytes as they arrive and gives the body bytes in them: the worker's
loop feeds it while it buffers a body before the app runs. The body ends where the framing says
(Content-Length or the last chunk); bytes after it (a pipelined request) stay in ``leftover``. The
size limit is checked up front against Content-Length by the caller, and here against each
declared chunk size.

:class:`RequestBody` is the body read from the socket only when the app asks (with request
buffering off): an upload of any size costs one buffer, and ``Expect: 100-continue`` is answered
at the app's first read and never if it does not read. Reading past the end returns b""
(``wsgi.input_terminated``).
"""

from __future__ import annotations

import re
import select
import socket
from collections.abc import Iterator

from forkserve.http.errors import ClientDisconnected, ClientTimeout, HttpError
from forkserve.http.head import RECV_SIZE
from forkserve.http.waiting import ClientWaits

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MAX_CHUNK_LINE = 4096
MAX_TRAILER = 16384

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# chunk = 1*16HEXDIG *( ";" BWS name [ BWS "=" BWS value ] ) CRLF -- no space after the size.
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:;[ \t]*%b(?:[ \t]*=[ \t]*(?:%b|%b))?[ \t]*)*\r\n" % (_TOKEN, _TOKEN, _QUOTED)
)
# What an incomplete chunk line may look like so far (anything else can never become valid).
_CHUNK_LINE_START = re.compile(rb"[0-9A-Fa-f]{1,16}(?:;[\t\x20-\x7e\x80-\xff]*)?\r?")
_TRAILER_FIELD = re.compile(rb"(%b):[ \t]*[\x21-\x7e\x80-\xff]*(?:[ \t]+[\x21-\x7e\x80-\xff]+)*[ \t]*\r\n" % _TOKEN)
_TRAILER_START = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\r?")
# Fields that decide framing or routing: a trailer must never carry them (a proxy that merges
# trailers into the head would otherwise see a different request than we did).
FORBIDDEN_TRAILERS = frozenset(
    (b"content-length", b"transfer-encoding", b"host", b"connection", b"expect", b"te", b"trailer",
     b"upgrade", b"content-type", b"content-encoding", b"content-range")
)

# Chunked decoder states
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class BodyDecoder:
    """One request body's framing: ``feed`` received bytes, get the body bytes they carry.

    ``done`` once the body has ended; ``leftover`` then holds the bytes after it. A framing
    error raises HttpError (400, or 413/431 for a chunk over the size limit or a too large
    trailer) and leaves ``failure`` set.
    """

    __slots__ = ("_chunk_left", "_chunked", "_limit", "_pending", "_remaining", "_state",
                 "_trailer_bytes", "done", "failure", "received")

    def __init__(self, content_length: int | None, chunked: bool, limit: int) -> None:
        self._chunked = chunked
        self._remaining = 0 if chunked else (content_length or 0)
        self._limit = limit
        self._pending = bytearray()
        self._state = _SIZE
        self._chunk_left = 0
        self._trailer_bytes = 0
        self.received = 0
        self.done = not chunked and not self._remaining
        self.failure: HttpError | None = None

    @property
    def leftover(self) -> bytes:
        """Bytes received after the end of the body: the start of a pipelined request."""
        return bytes(self._pending)

    @property
    def remaining(self) -> int | None:
        """Body bytes still to come under Content-Length; None when chunked."""
        return None if self._chunked else self._remaining

    def feed(self, data: bytes) -> bytes:
        """The body bytes in ``data`` (plus what earlier pieces left incomplete)."""
        if self.done:
            self._pending += data
            return b""
        if not self._chunked:
            remaining = self._remaining
            if len(data) <= remaining:
                body = data
            else:
                body = data[:remaining]
                self._pending += data[remaining:]
            self._remaining = remaining - len(body)
            self.received += len(body)
            self.done = not self._remaining
            return body
        self._pending += data
        out = bytearray()
        while self._decode_chunked(out):
            pass
        return bytes(out)

    def _fail(self, error: HttpError) -> HttpError:
        self.failure = error
        self.done = True
        return error

    def _decode_chunked(self, out: bytearray) -> bool:
        """One step over ``_pending``; False when more bytes are needed or the body ended."""
        pending = self._pending
        state = self._state
        if state == _DATA:
            if not pending:
                return False
            size = self._chunk_left
            if len(pending) <= size:
                data = bytes(pending)
                pending.clear()
            else:
                data = bytes(pending[:size])
                del pending[:size]
            self._chunk_left = size - len(data)
            if not self._chunk_left:
                self._state = _DATA_END
            self.received += len(data)
            out += data
            return True
        if state == _SIZE:
            line = self._line(MAX_CHUNK_LINE, _CHUNK_LINE_START, "chunk size line")
            if line is None:
                return False
            match = _CHUNK_LINE.fullmatch(line)
            if match is None:
                raise self._fail(HttpError(400, f"malformed chunk size line {bytes(line[:40])!r}"))
            size = int(match.group(1), 16)
            if self._limit and self.received + size > self._limit:
                raise self._fail(HttpError(413, f"request body larger than {self._limit} bytes"))
            self._chunk_left = size
            self._state = _DATA if size else _TRAILER
            return True
        if state == _DATA_END:
            if pending[:2] == b"\r\n":
                del pending[:2]
                self._state = _SIZE
                return True
            if pending[:1] not in (b"", b"\r") or len(pending) >= 2:
                raise self._fail(HttpError(400, "chunk data longer than its size, or not ended by CRLF"))
            return False
        if state == _TRAILER:
            line = self._line(MAX_CHUNK_LINE, _TRAILER_START, "trailer line")
            if line is None:
                return False
            self._trailer_bytes += len(line)
            if line == b"\r\n":
                self._state = _DONE
                self.done = True
                return False
            self._check_trailer(line)
            return True
        return False

    def _line(self, limit: int, valid_start: re.Pattern[bytes], what: str) -> bytearray | None:
        """The next CRLF-ended line off ``_pending``, or None if incomplete and still plausible."""
        pending = self._pending
        newline = pending.find(b"\n", 0, limit)
        if newline < 0:
            if len(pending) >= limit:
                raise self._fail(HttpError(400, f"{what} longer than {limit} bytes"))
            if pending and not valid_start.fullmatch(pending):
                raise self._fail(HttpError(400, f"malformed {what} {bytes(pending[:40])!r}"))
            return None
        line = pending[: newline + 1]
        del pending[: newline + 1]
        if line[-2:-1] != b"\r":
            raise self._fail(HttpError(400, f"bare LF in {what}"))
        return line

    def _check_trailer(self, line: bytearray) -> None:
        if self._trailer_bytes > MAX_TRAILER:
            raise self._fail(HttpError(431, f"trailer section larger than {MAX_TRAILER} bytes"))
        match = _TRAILER_FIELD.fullmatch(line)
        if match is None:
            raise self._fail(HttpError(400, f"malformed trailer field {bytes(line[:40])!r}"))
        name = match.group(1).lower()
        if name in FORBIDDEN_TRAILERS:
            raise self._fail(HttpError(400, f"{name.decode()} is not allowed in a trailer"))


def wait_readable(sock: socket.socket, timeout: float) -> bool:
    """Block until the socket has bytes (or EOF) to read, at most ``timeout`` seconds."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(max(timeout, 0.0) * 1000))


class InputFile:
    """The PEP 3333 ``wsgi.input`` methods over ``_more()``, which appends to ``_buffer``."""

    __slots__ = ()
    _buffer: bytearray

    def _more(self) -> bool:
        raise NotImplementedError

    def _take(self, size: int) -> bytes:
        buffer = self._buffer
        if size >= len(buffer):
            result = bytes(buffer)
            buffer.clear()
            return result
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


class RequestBody(InputFile):
    """``wsgi.input`` read from the (non-blocking) socket as the app asks: request buffering off."""

    __slots__ = ("_buffer", "_continue_pending", "_decoder", "_eof", "_idle_timeout", "_pending", "_sock",
                 "_waits", "failure")

    def __init__(
        self,
        sock: socket.socket,
        idle_timeout: float,
        decoder: BodyDecoder,
        expect_continue: bool,
        waits: ClientWaits | None = None,
        pending: bytes = b"",
    ) -> None:
        self._sock = sock
        self._idle_timeout = idle_timeout
        self._decoder = decoder
        self._pending = pending  # bytes that came with the head, decoded at the first read
        self._buffer = bytearray()
        self._eof = decoder.done and not pending
        self._continue_pending = expect_continue and not decoder.done
        self._waits = waits
        self.failure: HttpError | None = None

    @property
    def complete(self) -> bool:
        """True when the whole body has come off the wire (read by the app or drained)."""
        return self._eof and self.failure is None

    @property
    def continue_pending(self) -> bool:
        """True when the client waits for 100 Continue that was never sent (app did not read)."""
        return self._continue_pending

    @property
    def received(self) -> int:
        return self._decoder.received

    @property
    def leftover(self) -> bytes:
        """Bytes received after the end of the body: the start of a pipelined request."""
        return self._pending + self._decoder.leftover if self._decoder.done else self._decoder.leftover

    def _more(self) -> bool:
        """Append the next piece of body to the buffer; False at the end of the body."""
        if self._eof:
            return False
        if self._continue_pending:
            self._continue_pending = False
            try:
                self._sock.sendall(CONTINUE)
            except OSError as error:
                self._eof = True
                raise ClientDisconnected(f"could not send 100 Continue: {error}") from None
        decoder = self._decoder
        while True:
            if self._pending:
                received, self._pending = self._pending, b""
            else:
                remaining = decoder.remaining
                received = self._recv(RECV_SIZE if remaining is None else min(RECV_SIZE, remaining))
            try:
                data = decoder.feed(received)
            except HttpError as error:
                self.failure = error
                self._eof = True
                raise
            self._buffer += data
            if decoder.done:
                self._eof = True
                return bool(data)
            if data:
                return True

    def _recv(self, size: int) -> bytes:
        """The next bytes from the client, waiting up to the idle timeout (shown as a client
        wait on the scoreboard, not as time in the app)."""
        sock = self._sock
        waits = None
        try:
            while True:
                try:
                    data = sock.recv(size)
                    break
                except BlockingIOError:
                    if waits is None and self._waits is not None:
                        waits = self._waits
                        waits.begin()
                    if not wait_readable(sock, self._idle_timeout):
                        self.failure = ClientTimeout("client stalled while sending the body")
                        self._eof = True
                        raise self.failure from None
        except OSError as error:
            self._eof = True
            raise ClientDisconnected(str(error)) from None
        finally:
            if waits is not None:
                waits.end()
        if not data:
            self._eof = True
            raise ClientDisconnected("client closed the connection before the body ended")
        return data

    def drain(self, budget: int) -> bool:
        """Read and discard what the app left unread, up to ``budget`` bytes; True if it all came."""
        self._buffer.clear()
        if self._continue_pending:
            return False  # the client waits for our go-ahead; reading would only stall
        start = self.received
        while self.received - start <= budget:
            try:
                if not self._more():
                    return self.failure is None
            except (HttpError, ClientDisconnected):
                return False
            self._buffer.clear()
        return False
