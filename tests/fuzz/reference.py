"""The reference parse: what h11 makes of a byte stream, and the environ that stands for it.

forkserve may refuse more than h11 but never serve what h11 refuses, nor serve a request h11 reads
differently. So the same bytes are parsed here with ``h11.Connection(h11.SERVER)``, a fresh one per
request (h11 closes after every HTTP/1.0 request, where HTTP/1.0 ``keep-alive`` may legitimately
keep a connection open) fed the bytes the previous one left over. Two adjustments bring h11 to the
standard rather than to forkserve: RFC 9112 2.2's empty lines before a request line are skipped
(h11 refuses even one; forkserve, as the RFC asks, skips a few), and h11's 16 KiB head limit,
a resource limit rather than a syntax rule, is lifted (forkserve's own limits are set below it).

``expected_environ`` maps an h11 request to the environ fields a PEP 3333 server derives from it,
written from the RFCs and PEP 3333, not from forkserve's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

import h11

# RFC 9112 2.2 asks a server to skip "at least one" empty line before a request line; forkserve
# skips this many and refuses more (which is stricter, so skipping the same here is neutral).
MAX_EMPTY_LINES = 8
HEAD_ROOM = 1 << 20


@dataclass
class ParsedRequest:
    """One request as h11 parsed it. ``complete``: h11 saw its whole body."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    complete: bool = False


@dataclass
class Reference:
    """h11's view of a whole byte stream.

    ``end`` is how the stream ends after ``requests``: ``open`` (every request complete and the
    connection persists: a further request would be read), ``close`` (the last complete request
    closes the connection), ``incomplete`` (more bytes were needed) or ``error`` (h11 refused).
    """

    requests: list[ParsedRequest] = field(default_factory=list)
    end: str = "open"
    error: str = ""

    @property
    def complete(self) -> list[ParsedRequest]:
        return [request for request in self.requests if request.complete]


def persistent(request: ParsedRequest) -> bool:
    """RFC 9112 9.3: does the connection stay open after this request?

    A ``close`` connection option always closes; HTTP/1.1 persists by default, HTTP/1.0 only with
    ``keep-alive`` (h11 itself never keeps an HTTP/1.0 connection, hence the rule here).
    """
    tokens = {
        token.strip().lower()
        for name, value in request.headers
        if name == b"connection"
        for token in value.split(b",")
    }
    if b"close" in tokens:
        return False
    return request.version == b"1.1" or (request.version == b"1.0" and b"keep-alive" in tokens)


def _skip_empty_lines(data: bytes) -> bytes:
    for _ in range(MAX_EMPTY_LINES):
        if data[:2] != b"\r\n":
            break
        data = data[2:]
    return data


def parse(data: bytes) -> Reference:
    """h11's reading of ``data``, all of which the client sends (it may end mid-request)."""
    reference = Reference()
    rest = data
    while True:
        rest = _skip_empty_lines(rest)
        if not rest:
            return reference
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_ROOM)
        connection.receive_data(rest)
        request: ParsedRequest | None = None
        try:
            while True:
                event = connection.next_event()
                if isinstance(event, h11.Request):
                    request = ParsedRequest(event.method, event.target, event.http_version,
                                            list(event.headers))
                    reference.requests.append(request)
                elif isinstance(event, h11.Data):
                    assert request is not None
                    request.body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    request.complete = True
                    break
                else:  # NEED_DATA: the stream ends inside a request
                    reference.end = "incomplete"
                    return reference
        except h11.RemoteProtocolError as error:
            reference.end, reference.error = "error", str(error)
            return reference
        if not persistent(request):
            reference.end = "close"
            return reference
        rest = connection.trailing_data[0]


def _origin_form(target: bytes) -> bytes:
    """RFC 9112 3.2.2: an absolute-form target's path and query (``/`` when the path is empty)."""
    if target[:1] == b"/" or target == b"*":
        return target
    rest = target.partition(b"://")[2]
    for index, byte in enumerate(rest):
        if byte in b"/?#":
            return (b"/" if byte != ord("/") else b"") + rest[index:]
    return b"/"


def _authority(target: bytes) -> bytes | None:
    if target[:1] == b"/" or target == b"*":
        return None
    rest = target.partition(b"://")[2]
    for index, byte in enumerate(rest):
        if byte in b"/?#":
            return rest[:index]
    return rest


def expected_environ(request: ParsedRequest) -> dict[str, str]:
    """The environ fields (those the fuzz app records) a server must derive from ``request``.

    PEP 3333 and the CGI spec: ``PATH_INFO`` percent-decoded, as latin-1; ``QUERY_STRING`` as
    sent; the fragment (which a request target should not carry at all) belongs to neither.
    Header fields become ``HTTP_*`` (upper case, ``-`` to ``_``) except Content-Type and
    Content-Length; names with ``_`` are dropped (they would collide with ``-`` names); repeated
    fields are joined with ``,`` (RFC 9110 5.3), Cookie with ``; `` (RFC 6265 5.4). An
    absolute-form target's authority replaces the Host field (RFC 9112 3.2.2).
    """
    target = request.target
    without_fragment = _origin_form(target).split(b"#", 1)[0]
    path, _, query = without_fragment.partition(b"?")
    environ = {
        "REQUEST_METHOD": request.method.decode("latin-1"),
        "RAW_URI": target.decode("latin-1"),
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
    }
    chunked = False
    for name, value in request.headers:
        if name == b"transfer-encoding":
            chunked = True
        if name == b"content-length":
            environ["CONTENT_LENGTH"] = str(int(value))
            continue
        if b"_" in name:
            continue
        key = "CONTENT_TYPE" if name == b"content-type" else "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        if key in environ:
            environ[key] += ("; " if key == "HTTP_COOKIE" else ",") + text
        else:
            environ[key] = text
    if chunked:
        environ.pop("CONTENT_LENGTH", None)  # RFC 9112 6.3: chunked framing overrides it
    authority = _authority(target)
    if authority is not None and "HTTP_HOST" in environ:
        environ["HTTP_HOST"] = authority.decode("latin-1")
    return environ
