"""One request head from bytes (sans-I/O): limits, h11's validation, and the checks h11 does not make.

The head is complete at the first CRLF CRLF. It is split into lines here, checked more strictly
than h11 would (h11 accepts bare LF, obs-fold, CTL bytes in values, identical duplicate
Content-Length, any HTTP/x.y version, lower-case methods, Transfer-Encoding in HTTP/1.0), and
then handed to ``h11.Request``, which validates every field name and value, Host, and the
Content-Length / Transfer-Encoding rules. h11's connection state machine is not used: the body
framing (forkserve.http.body) and the response (forkserve.http.response) are ours, so driving
the state machine per request would cost about half of h11's time for nothing. For ordinary
requests the head arrives in one ``recv``, so each check is a C-level scan of it.

Ordinary heads first go to a one-pass reader, chosen once per connection from the limits (the
``http_parser`` setting): the fast path below, or llhttp's (:mod:`.llhttp_head`). Either gives
exactly the head the strict path would read, or None, and then the strict path decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import h11

from forkserve.http.errors import HttpError
from forkserve.http.requesthead import (
    HOST,
    ORDINARY_REQUEST_LINE,
    SHORT_DIGITS,
    HeadLimits,
    RequestHead,
    header_tokens,
    ordinary_head,
)

# A one-pass reader of ordinary heads: the head (ending in CRLF CRLF), the bytes after it and the
# limits in; the RequestHead the strict path would read, or None to leave the head to that path.
OrdinaryReader = Callable[[bytes, bytes, HeadLimits], RequestHead | None]

RECV_SIZE = 65536  # bytes asked of the kernel per read

_METHOD = re.compile(rb"[A-Z0-9!#$%&'*+.^_`|~-]+\Z")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])\Z")
_CTL_IN_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_CTL_IN_FIELDS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_DIGITS = re.compile(rb"[0-9]+\Z")
_BARE_CR_OR_LF = re.compile(rb"(?<!\r)\n|\r(?=[^\n])")
MAX_EMPTY_LINES = 8
_LINE_END_BYTES = (b"\r", b"\n")


def _check_request_line(line: bytes, limits: HeadLimits) -> list[bytes]:
    """[method, target, version] of a valid request line; HttpError otherwise."""
    if len(line) > limits.line:
        raise HttpError(414, f"request line longer than {limits.line} bytes")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not _METHOD.match(method):
        raise HttpError(400, f"invalid method {method[:20]!r}")
    if method == b"CONNECT":
        # Whatever the target form: any 2xx to CONNECT opens a tunnel for every intermediary
        # (RFC 9110 9.3.6), so serving it would let the bytes after it pass a front end unseen.
        raise HttpError(501, "CONNECT is not implemented (this is not a proxy)")
    if not target or _CTL_IN_TARGET.search(target):
        raise HttpError(400, "invalid request target")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if _VERSION.match(version):
            raise HttpError(505, f"unsupported version {version.decode('latin-1')}")
        raise HttpError(400, "malformed HTTP version")
    return parts


def parse_head(head: bytes, limits: HeadLimits) -> h11.Request:
    """Check a complete raw head (ending in CRLF CRLF) strictly, and have h11 validate it.

    Returns h11's Request event; raises HttpError with the status the client gets.
    """
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
        raise HttpError(400, "bare CR or LF in request head")
    lines = head.split(b"\r\n")
    method, target, version = _check_request_line(lines[0], limits)
    fields = lines[1:-2]
    if len(fields) > limits.fields:
        raise HttpError(431, f"more than {limits.fields} header fields")
    if _CTL_IN_FIELDS.search(head, len(lines[0]) + 2, len(head) - 4):
        raise HttpError(400, "control character in header field")
    content_lengths = 0
    headers: list[tuple[bytes, bytes]] = []
    for field in fields:
        if len(field) > limits.field_size:
            raise HttpError(431, f"header field longer than {limits.field_size} bytes")
        if field[:1] in (b" ", b"\t"):
            if not limits.permit_folding:
                raise HttpError(400, "obsolete line folding in header")
            if not headers:
                raise HttpError(400, "folded line before the first header field")
            name, value = headers[-1]
            headers[-1] = (name, (value + b" " + field.strip(b" \t")).strip(b" "))
            continue
        name, colon, value = field.partition(b":")
        if not colon:
            raise HttpError(400, "header line without a colon")
        value = value.strip(b" \t")
        lowered = name.lower()
        if lowered == b"content-length":
            content_lengths += 1
            if content_lengths > 1:
                raise HttpError(400, "duplicate Content-Length")
            if not _DIGITS.match(value):
                raise HttpError(400, "malformed Content-Length")
        elif b"_" in name and limits.header_map == "refuse":
            raise HttpError(400, f"header name with underscore: {name[:40]!r}")
        headers.append((name, value))
    try:
        return h11.Request(method=method, target=target, headers=headers, http_version=version[5:])
    except h11.LocalProtocolError as error:
        raise HttpError(error.error_status_hint, str(error)) from None


class HeadReader:
    """The next request head of one connection, from bytes as they arrive (sans-I/O).

    ``feed`` the bytes received (the leftover of the previous request first); it returns the
    checked head once its CRLF CRLF has arrived, None while more is needed, and raises HttpError
    as soon as what has arrived can never become a valid head (so a trickled bad request is
    refused at once, not at the header deadline). Deadlines are the caller's: this only parses.
    """

    __slots__ = ("checked", "held", "limits", "line_done", "ordinary", "raw")

    def __init__(self, limits: HeadLimits) -> None:
        self.limits = limits
        self.ordinary = ordinary_reader(limits.parser)
        self.raw = b""  # the head so far, from its request line on
        self.held = b""  # empty lines (CRLFs) received before the request line, not yet ignored
        self.checked = 0  # how much of raw the partial checks have seen
        self.line_done = False  # has the request line been checked yet?

    @property
    def started(self) -> bool:
        """Has any byte of a request (not only empty lines) arrived?"""
        return bool(self.raw)

    def feed(self, data: bytes) -> RequestHead | None:
        """Add received bytes; the head once complete (its ``leftover``: the bytes after it)."""
        raw = self.raw
        if not raw:
            if self.held or data[:1] in _LINE_END_BYTES:
                self.held += data
                data = _skip_empty_lines(self.held)
                if not data:
                    return None  # only empty lines so far: not a request yet
                self.held = b""
            raw = data
        else:
            raw += data
        limits = self.limits
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            self.raw = raw
            self.line_done = _check_partial(raw, self.checked, self.line_done, limits)
            self.checked = len(raw)
            if len(raw) > limits.head_size:
                raise HttpError(431, f"request head larger than {limits.head_size} bytes")
            return None
        end += 4
        if end > limits.head_size:
            raise HttpError(431, f"request head larger than {limits.head_size} bytes")
        self.raw = b""
        self.checked = 0
        self.line_done = False
        head = self.ordinary(raw[:end], raw[end:], limits)
        if head is not None:
            return head
        return _describe(parse_head(raw[:end], limits), raw[end:])


def _skip_empty_lines(raw: bytes) -> bytes:
    """What follows the CRLFs that ``raw`` (everything received so far) starts with. RFC 9112
    2.2: a server SHOULD ignore at least one empty line before a request line, as some clients
    send one after a POST body. At most MAX_EMPTY_LINES; more, or a bare CR or LF, are a 400."""
    stripped = raw.lstrip(b"\r\n")
    skipped = raw[: len(raw) - len(stripped)]
    pairs, odd = divmod(len(skipped), 2)
    if skipped[: 2 * pairs] != b"\r\n" * pairs or (odd and (skipped[-1:] != b"\r" or stripped)):
        raise HttpError(400, "bare CR or LF before the request line")
    if pairs > MAX_EMPTY_LINES:
        raise HttpError(400, "too many empty lines before the request line")
    return stripped  # empty when all of it is empty lines, or a CR waiting for its LF


def _check_partial(raw: bytes, start: int, line_done: bool, limits: HeadLimits) -> bool:
    """Checks on an incomplete head, so a request that can never become valid is refused now
    rather than at the head deadline: an endless request line (414), a bare CR or LF, a control
    character, a bad request line. Only bytes from ``start`` on are scanned (a trickled head
    costs linear time). Returns whether the request line is complete and checked."""
    begin = max(start - 1, 0)
    if _BARE_CR_OR_LF.search(raw, begin):
        raise HttpError(400, "bare CR or LF in request head")
    if _CTL_IN_FIELDS.search(raw, begin):
        raise HttpError(400, "control character in request head")
    if line_done:
        return True
    newline = raw.find(b"\n", begin)
    if newline < 0:
        if len(raw) > limits.line + 1:
            raise HttpError(414, f"request line longer than {limits.line} bytes")
        return False
    _check_request_line(raw[: newline - 1], limits)
    return True


def _describe(request: h11.Request, leftover: bytes) -> RequestHead:
    """Framing and connection facts of a checked request."""
    version = request.http_version
    connection_tokens: set[bytes] = set()
    expect_continue = False
    content_length: int | None = None
    chunked = False
    had_length = False
    host = b""
    headers = [(name, value) for _, name, value in request.headers._full_items]
    for name, value in headers:
        if name == b"connection":
            connection_tokens |= header_tokens(value)
        elif name == b"content-length":
            had_length = True
            content_length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"host":
            host = value
        elif name == b"expect":
            expect_continue = b"100-continue" in header_tokens(value)
    if chunked:
        if version == b"1.0":
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        content_length = None
    target = request.target
    if target[:1] != b"/":
        host = _absolute_form_authority(target, host, request.method)
    if host and not HOST.match(host):
        raise HttpError(400, "malformed Host header")
    # RFC 9112 9.6: a "close" option closes, whatever else the field lists; HTTP/1.0 stays
    # open only when asked to with "keep-alive".
    keep_alive = b"close" not in connection_tokens and (version == b"1.1" or b"keep-alive" in connection_tokens)
    return RequestHead(
        method=request.method,
        target=target,
        version=version,
        headers=headers,
        leftover=leftover,
        keep_alive=keep_alive,
        must_close=chunked and had_length,
        chunked=chunked,
        content_length=content_length,
        expect_continue=expect_continue and version == b"1.1",
        host=host,
    )


def _absolute_form_authority(target: bytes, host: bytes, method: bytes) -> bytes:
    """For ``GET http://host/path``, the authority of the target wins over the Host header."""
    if target == b"*" and method == b"OPTIONS":
        return host
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise HttpError(400, "invalid request target")
    authority = rest.split(b"/", 1)[0].split(b"?", 1)[0]
    if not authority or b"@" in authority:
        raise HttpError(400, "invalid authority in request target")
    return authority


# -- the fast path ------------------------------------------------------------------------------
#
# A one-pass path for ordinary request heads; anything unusual takes the strict path.
#
# Most heads are alike: a common method, an origin-form target, HTTP/1.1 or 1.0, a handful of
# plainly written ASCII fields, one Host, at most one Content-Length, no Transfer-Encoding. For
# such a head every check of the strict path (forkserve's own, then h11's validation) is known to
# pass, so this path checks the head's *shape* with two C-level regular expressions and reads the
# few fields that decide framing and connection handling — several times cheaper than building an
# ``h11.Request``. The shape is deliberately narrower than what h11 accepts (no obs-text, no tabs,
# no whitespace before a colon or after a value, no duplicate Host or Content-Length): a head that
# does not fit is not refused here, it is handed to the strict path, which decides (and, for a bad
# head, says why). So forkserve stays exactly as strict as before; the fuzzer's differential oracle
# against h11 and the request corpus hold both paths to that.

_FAST_REQUEST_LINE = re.compile(ORDINARY_REQUEST_LINE + rb"\Z")
# Fields: a token, a colon, spaces, then visible ASCII with single inner spaces allowed, nothing
# trailing. (h11 accepts all of these; what it also accepts goes to the strict path.)
_FAST_FIELDS = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+: *(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?\r\n)*\Z")


def fast_head(head: bytes, leftover: bytes, limits: HeadLimits) -> RequestHead | None:
    """The head (ending in CRLF CRLF) as a RequestHead if it has the ordinary shape, else None."""
    line_end = head.find(b"\r\n")
    line = head[:line_end]
    if len(line) > limits.line:
        return None
    request = _FAST_REQUEST_LINE.match(line)
    if request is None:
        return None
    fields = head[line_end + 2:-2]
    if not _FAST_FIELDS.match(fields):
        return None
    lines = fields.split(b"\r\n")
    del lines[-1]  # (after the last CRLF)
    if len(lines) > limits.fields:
        return None
    field_size = limits.field_size
    refuse_underscores = limits.header_map == "refuse"
    headers = []
    host = None
    content_length = None
    connection = b""
    expect = b""
    for field in lines:
        if len(field) > field_size:
            return None
        name, _, value = field.partition(b":")
        name = name.lower()
        value = value.lstrip(b" ")
        if name == b"host":
            if host is not None:
                return None
            host = value
        elif name == b"content-length":
            if content_length is not None or not SHORT_DIGITS.match(value):
                return None
            content_length = int(value)
        elif name == b"transfer-encoding":
            return None
        elif name == b"connection":
            connection = value if not connection else connection + b"," + value
        elif name == b"expect":
            expect = value
        elif refuse_underscores and b"_" in name:
            return None
        headers.append((name, value))
    version = b"1.1" if request.group(3) == b"1" else b"1.0"
    return ordinary_head(request.group(1), request.group(2), version, headers, leftover, host, content_length,
                         connection, expect)


def ordinary_reader(parser: str) -> OrdinaryReader:
    """The one-pass reader for the ``http_parser`` setting (resolved): the fast path, or llhttp's
    (imported only here, so a worker on the default never loads httptools)."""
    if parser == "httptools":
        from forkserve.http.llhttp_head import httptools_head

        return httptools_head
    return fast_head
