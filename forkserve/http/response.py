"""Writing the response: ``start_response``, framing, and the bytes on the wire.

The head is built here as one string from the app's status and headers rather than through h11,
which costs several times more per response. Framing follows the app's Content-Length when it
gives one; a body that is a one-element list gets a Content-Length computed here (so it can stay
on a keep-alive connection); anything else is chunked on HTTP/1.1 and close-delimited on 1.0.
The head and a small body leave in one ``send``.

Bytes go to a :class:`Sink`, not to a socket: the worker's connection, which sends what the client
takes at once and keeps the rest (up to a cap) for its loop to flush while the app runs the next
request — so a slow reader of a large response does not hold the worker.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from forkserve.http.dates import date_line
from forkserve.http.errors import ClientDisconnected

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_STATUS = re.compile(r"[1-9][0-9][0-9] [^\r\n]*\Z")
HOP_BY_HOP = frozenset(
    ("keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers", "transfer-encoding", "upgrade")
)
COALESCE_LIMIT = 65536
SERVER_LINE = "Server: forkserve\r\n"


class Sink(Protocol):
    """Where a response's bytes go, in order. Both calls raise ClientDisconnected (or
    ClientTooSlow) when the client is gone or does not read in time."""

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the client (sent now as far as the client takes it)."""

    def sendfile(self, fd: int, offset: int, length: int) -> None:
        """Queue ``length`` bytes of the regular file ``fd`` from ``offset`` (the sink keeps its
        own handle: the caller may close ``fd`` once this returns)."""


class AppError(Exception):
    """The app broke the WSGI contract (bad status, bad header, wrong body length)."""


class ClientTooSlow(ClientDisconnected):
    """The client did not read the response within the send timeout."""


# Framing modes
LENGTH, CHUNKED, CLOSE, NO_BODY = 1, 2, 3, 4


_HeaderBlock = tuple[str, "int | None", bool, bool, bool]
_header_blocks: dict[tuple[tuple[str, str], ...], _HeaderBlock] = {}
HEADER_BLOCK_CACHE_SIZE = 512


def app_header_block(headers: list[tuple[str, str]]) -> _HeaderBlock:
    """The app's headers checked and joined: (text, Content-Length, has Date, has Server, asks
    to close). Apps send the same few header lists over and over, so results are cached by the
    list's contents; a list seen for the first time (or with unhashable items) is checked here."""
    try:
        key = tuple(headers)
        cached = _header_blocks.get(key)
    except TypeError:  # an item is not a tuple of strings: let the check below say so
        key, cached = None, None
    if cached is not None:
        return cached
    lines: list[str] = []
    content_length: int | None = None
    has_date = has_server = app_close = False
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise AppError(f"header must be a (name, value) tuple, got {item!r}")
        name, value = item
        if type(name) is not str or not _TOKEN.match(name):
            raise AppError(f"invalid header name {name!r}")
        if type(value) is not str or "\n" in value or "\r" in value:
            raise AppError(f"invalid value for header {name}: {value!r}")
        lowered = name.lower()
        if lowered == "content-length":
            if not value.strip().isdigit():
                raise AppError(f"invalid Content-Length {value!r}")
            content_length = int(value)
            continue
        if lowered == "connection":
            app_close = "close" in value.lower()
            continue
        if lowered in HOP_BY_HOP:
            raise AppError(f"hop-by-hop header {name} is the server's to set")
        if lowered == "date":
            has_date = True
        elif lowered == "server":
            has_server = True
        lines += (name, ": ", value, "\r\n")
    result = ("".join(lines), content_length, has_date, has_server, app_close)
    if key is not None:
        if len(_header_blocks) >= HEADER_BLOCK_CACHE_SIZE:
            _header_blocks.clear()  # per-request values (cookies, timings) must not pile up
        _header_blocks[key] = result
    return result


class Response:
    """One response: the app's ``start_response``/``write`` and the framing of its body."""

    __slots__ = (
        "bytes_out",
        "content_length",
        "decide_keep_alive",
        "extra_head",
        "framing",
        "head_sent",
        "headers",
        "http11",
        "is_head",
        "keep_alive",
        "overflow",
        "sent",
        "sink",
        "status",
        "status_code",
        "use_sendfile",
    )

    def __init__(
        self,
        sink: Sink,
        is_head: bool,
        http11: bool,
        decide_keep_alive: Callable[[], bool],
        use_sendfile: bool = True,
    ) -> None:
        self.sink = sink
        self.use_sendfile = use_sendfile
        self.is_head = is_head
        self.http11 = http11
        self.decide_keep_alive = decide_keep_alive
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.head_sent = False
        self.framing = 0
        self.content_length: int | None = None
        self.sent = 0
        self.bytes_out = 0
        self.keep_alive = False
        self.status_code = 0
        self.overflow = False
        self.extra_head = ""  # complete header lines the server adds (e.g. the request id)

    # -- the WSGI side ---------------------------------------------------------------------

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        """PEP 3333 start_response: may be called again only with exc_info, before the head is sent."""
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        if type(status) is not str or not _STATUS.match(status):
            raise AppError(f"invalid status line {status!r}")
        if type(headers) is not list:
            raise AppError(f"headers must be a list, got {type(headers).__name__}")
        self.status = status
        self.status_code = int(status[:3])
        self.headers = headers
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy ``write()`` callable, and the path every body chunk takes."""
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise AppError(f"body chunks must be bytes, got {type(data).__name__}")
            data = bytes(data)
        if not self.head_sent:
            self._send_head(data, None)
        elif data:
            self._send_body(data)

    def finish(self, result: Iterable[bytes]) -> None:
        """Send everything the app's iterable yields, then end the body."""
        if type(result) is list and len(result) <= 1 and not self.head_sent:
            body = result[0] if result else b""
            if type(body) is not bytes:
                return self._finish_iterable(result)
            self._send_head(body, len(body))
            self._end()
            return None
        file_span = getattr(result, "sendfile_span", None) if self.use_sendfile else None
        if file_span is not None and self.status is not None and not self.head_sent:
            span = file_span()
            if span is not None:
                return self._sendfile(*span)
        return self._finish_iterable(result)

    def _finish_iterable(self, result: Iterable[bytes]) -> None:
        write = self.write
        for chunk in result:
            if chunk:
                write(chunk)
        if not self.head_sent:
            self._send_head(b"", 0)
        self._end()

    # -- the wire side -----------------------------------------------------------------------

    def _build_head(self, known_length: int | None) -> str:
        if self.status is None:
            raise AppError("the app returned a body without calling start_response")
        code = self.status_code
        block, content_length, has_date, has_server, app_close = app_header_block(self.headers)
        lines = ["HTTP/1.1 ", self.status, "\r\n", block]

        if code < 200:
            raise AppError(f"status {self.status!r} is interim (1xx), not a final response")
        if code == 204:
            framing = NO_BODY
            content_length = None
        elif code == 304 or self.is_head:
            framing = NO_BODY  # the length, if the app gave one, describes the GET body
            if self.is_head and content_length is None and known_length:
                content_length = known_length
        elif content_length is not None:
            framing = LENGTH
        elif known_length is not None:
            framing = LENGTH
            content_length = known_length
        elif self.http11:
            framing = CHUNKED
            lines.append("Transfer-Encoding: chunked\r\n")
        else:
            framing = CLOSE
        if content_length is not None:
            lines += ("Content-Length: ", str(content_length), "\r\n")
        self.framing = framing
        self.content_length = content_length

        self.keep_alive = framing != CLOSE and not app_close and self.decide_keep_alive()
        if not self.keep_alive:
            lines.append("Connection: close\r\n")
        elif not self.http11:
            lines.append("Connection: keep-alive\r\n")
        if not has_server:
            lines.append(SERVER_LINE)
        if self.extra_head:
            lines.append(self.extra_head)
        if not has_date:
            lines.append(date_line(time.time()))
        lines.append("\r\n")
        return "".join(lines)

    def _send_head(self, first: bytes, known_length: int | None) -> None:
        text = self._build_head(known_length)
        try:
            head = text.encode("latin-1")
        except UnicodeEncodeError:
            raise AppError("response headers must be latin-1 text") from None
        self.head_sent = True
        if self.framing == NO_BODY:
            self._sendall(head)
            return
        if first:
            first = self._frame(first)
        if len(first) <= COALESCE_LIMIT:
            self._sendall(head + first if first else head)
        else:
            self._sendall(head)
            self._sendall(first)

    def _frame(self, data: bytes) -> bytes:
        """The bytes to put on the wire for one body chunk under the chosen framing."""
        framing = self.framing
        if framing == LENGTH:
            remaining = self.content_length - self.sent  # type: ignore[operator]
            if len(data) > remaining:
                self.overflow = True
                data = data[:remaining]
            self.sent += len(data)
            return data
        if framing == CHUNKED:
            self.sent += len(data)
            return b"%x\r\n%b\r\n" % (len(data), data)
        if framing == CLOSE:
            self.sent += len(data)
            return data
        return b""

    def _send_body(self, data: bytes) -> None:
        if self.framing == CHUNKED and len(data) > COALESCE_LIMIT:
            self.sent += len(data)
            self._sendall(b"%x\r\n" % len(data))
            self._sendall(data)
            self._sendall(b"\r\n")
            return
        framed = self._frame(data)
        if framed:
            self._sendall(framed)

    def _end(self) -> None:
        if self.framing == CHUNKED:
            self._sendall(b"0\r\n\r\n")
        elif self.framing == LENGTH and (self.overflow or self.sent != self.content_length):
            self.keep_alive = False
            raise AppError(
                f"app sent {'more' if self.overflow else 'fewer'} bytes than its Content-Length "
                f"({self.content_length})"
            )

    def _sendfile(self, fd: int, offset: int, length: int) -> None:
        """Send a regular file with os.sendfile (by the sink): no copies through Python."""
        self._send_head(b"", length)
        if self.framing == NO_BODY:
            return self._end()
        if self.framing == LENGTH:
            length = min(length, self.content_length - self.sent)  # type: ignore[operator]
        elif self.framing == CHUNKED:
            self._sendall(b"%x\r\n" % length)
        if length:
            self.sink.sendfile(fd, offset, length)
            self.sent += length
            self.bytes_out += length
        if self.framing == CHUNKED:
            self._sendall(b"\r\n")
        return self._end()

    def _sendall(self, data: bytes) -> None:
        self.sink.send(data)
        self.bytes_out += len(data)
