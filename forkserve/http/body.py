"""The request body as ``wsgi.input``: read from the socket only when the app asks.

h11 parses the request head; the body framing is decoded here. h11's chunked reader is lenient
in ways a server behind a proxy must not be (it takes any bytes as a chunk extension, accepts bare
LF in trailers, waits forever for a CRLF after a last chunk ended with bare LF, and lets a
trailer carry Content-Length). Every chunk line is checked strictly, partial lines too, so a
malformed body gets a 400 at once instead of a wait until the idle timeout.

Bytes are read only when the app asks for them, so an upload of any size costs one buffer, and
``Expect: 100-continue`` is answered at the app's first read and never if it does not read. The
body ends where the framing says (Content-Length or the last chunk), so reading past it returns
b"" (``wsgi.input_terminated``); bytes after it (a pipelined request) stay in ``leftover``. The
size limit is checked up front against Content-Length by the connection, and here against each
declared chunk size.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

from forkserve.http.errors import ClientDisconnected, ClientTimeout, HttpError
from forkserve.http.head import RECV_SIZE, RecvTimeout
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


class RequestBody:
    """A file-like, read-only view of the request body (PEP 3333 ``wsgi.input``)."""

    __slots__ = (
        "_buffer",
        "_chunk_left",
        "_chunked",
        "_continue_pending",
        "_eof",
        "_idle_timeout",
        "_limit",
        "_pending",
        "_received",
        "_remaining",
        "_sock",
        "_state",
        "_timeouts",
        "_trailer_bytes",
        "_waits",
        "failure",
    )

    def __init__(
        self,
        sock: socket.socket,
        timeouts: RecvTimeout,
        idle_timeout: float,
        limit: int,
        pending: bytes,
        content_length: int | None,
        chunked: bool,
        expect_continue: bool,
        waits: ClientWaits | None = None,
    ) -> None:
        self._sock = sock
        self._timeouts = timeouts
        self._idle_timeout = idle_timeout
        self._limit = limit
        self._pending = bytearray(pending)
        self._buffer = bytearray()
        self._chunked = chunked
        self._remaining = 0 if chunked else (content_length or 0)
        self._eof = not chunked and not self._remaining
        self._state = _SIZE
        self._chunk_left = 0
        self._trailer_bytes = 0
        self._received = 0
        self._continue_pending = expect_continue and not self._eof
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
        return self._received

    @property
    def has_leftover(self) -> bool:
        return bool(self._pending)

    @property
    def leftover(self) -> bytes:
        """Bytes received after the end of the body: the start of a pipelined request."""
        return bytes(self._pending)

    # -- decoding ----------------------------------------------------------------------------

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
            try:
                self._sock.sendall(CONTINUE)
            except OSError as error:
                self._eof = True
                raise ClientDisconnected(f"could not send 100 Continue: {error}") from None
        if not self._chunked:
            return self._more_by_length()
        while True:
            progress = self._decode_chunked()
            if progress is not None:
                return progress
            self._pending += self._recv(RECV_SIZE)

    def _more_by_length(self) -> bool:
        remaining = self._remaining
        pending = self._pending
        if pending:
            data = bytes(pending[:remaining])
            del pending[:remaining]
        else:
            data = self._recv(min(RECV_SIZE, remaining))
        self._remaining = remaining - len(data)
        self._received += len(data)
        self._buffer += data
        if not self._remaining:
            self._eof = True
        return True

    def _recv(self, size: int) -> bytes:
        self._timeouts.set(self._idle_timeout)
        waits = self._waits
        if waits is not None:
            waits.begin()
        try:
            data = self._sock.recv(size)
        except (BlockingIOError, TimeoutError):
            raise self._fail(ClientTimeout("client stalled while sending the body")) from None
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

    def _decode_chunked(self) -> bool | None:
        """Decode what ``_pending`` holds: True after adding data, False at the end, None when
        more bytes are needed."""
        pending = self._pending
        while True:
            state = self._state
            if state == _DATA:
                if not pending:
                    return None
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
                self._received += len(data)
                self._buffer += data
                return True
            if state == _SIZE:
                line = self._line(MAX_CHUNK_LINE, _CHUNK_LINE_START, "chunk size line")
                if line is None:
                    return None
                match = _CHUNK_LINE.fullmatch(line)
                if match is None:
                    raise self._fail(HttpError(400, f"malformed chunk size line {bytes(line[:40])!r}"))
                size = int(match.group(1), 16)
                if self._limit and self._received + size > self._limit:
                    raise self._fail(HttpError(413, f"request body larger than {self._limit} bytes"))
                self._chunk_left = size
                self._state = _DATA if size else _TRAILER
            elif state == _DATA_END:
                if pending[:2] == b"\r\n":
                    del pending[:2]
                    self._state = _SIZE
                elif pending[:1] not in (b"", b"\r") or len(pending) >= 2:
                    raise self._fail(HttpError(400, "chunk data longer than its size, or not ended by CRLF"))
                else:
                    return None
            elif state == _TRAILER:
                line = self._line(MAX_CHUNK_LINE, _TRAILER_START, "trailer line")
                if line is None:
                    return None
                self._trailer_bytes += len(line)
                if line == b"\r\n":
                    self._state = _DONE
                    self._eof = True
                    return False
                self._check_trailer(line)
            else:
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

    # -- the file-like side ------------------------------------------------------------------

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

    def drain(self, budget: int) -> bool:
        """Read and discard what the app left unread, up to ``budget`` bytes; True if it all came."""
        self._buffer.clear()
        if self._continue_pending:
            return False  # the client waits for our go-ahead; reading would only stall
        start = self._received
        while self._received - start <= budget:
            try:
                if not self._more():
                    return self.failure is None
            except (HttpError, ClientDisconnected):
                return False
            self._buffer.clear()
        return False
