"""The optional C reader of ordinary request heads (``http_parser = 'httptools'``): llhttp splits
the head, forkserve checks that it has the fast path's shape.

The contract is the fast path's (:func:`forkserve.http.head.fast_head`): for a head ending in
CRLF CRLF, either exactly the RequestHead the strict path (forkserve's checks, then h11) would
read, or None, and then the strict path decides — and refuses with the same status. So this
accepts no more than the fast path's shape: a common method, an origin-form target, HTTP/1.0 or
1.1, visible-ASCII fields written plainly, one Host, at most one Content-Length of digits, no
Transfer-Encoding, within the limits.

llhttp is a tokenizer here, not a judge. Where its strictness varies by version or flag (bare
LF, bare CR, obs-fold, control bytes and obs-text in values, trailing spaces, which it keeps in a
value where h11 strips them, odd versions and targets, repeated fields), nothing it lets through
is taken on trust: the request line is matched again, and a head passes only when every byte is
visible ASCII or part of a CRLF, there is exactly one CRLF per field llhttp reported (nothing
folded, merged or lost), no line ends in a space and no name repeats — a few C-level scans of
the head. What is taken from llhttp is the split itself: where each name ends (at a colon; a
name is a token with no space before the colon unless llhttp is told to be lenient, which this
module never does, and tests/http/test_llhttp_head.py holds the installed llhttp to that) and
the value after it, its leading spaces stripped. A repeated field (two Cookie lines, say) is
left to the strict path rather than joined here: rare in practice, and it keeps this reader
short.

httptools is imported with this module, which only a worker that chose it imports.
"""

from __future__ import annotations

import re

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from forkserve.http.requesthead import (
    ORDINARY_REQUEST_LINE,
    SHORT_DIGITS,
    HeadLimits,
    RequestHead,
    ordinary_head,
)

_REQUEST_LINE = re.compile(ORDINARY_REQUEST_LINE + rb"\r\n")
_VISIBLE = bytes(range(0x20, 0x7F))  # deleted from a head, what is left must be its CRLFs
_FAILED = (HttpParserError, HttpParserUpgrade)


class _Fields:
    """httptools' protocol object: collects each field as (lower-case name, value)."""

    __slots__ = ("fields",)
    # The callbacks left unused, as class attributes: httptools looks each one up for every
    # parser it makes, and a missing attribute would cost an AttributeError each time.
    on_message_begin = on_url = on_status = on_headers_complete = on_body = None
    on_message_complete = on_chunk_header = on_chunk_complete = None

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.lower(), value))


def httptools_head(head: bytes, leftover: bytes, limits: HeadLimits) -> RequestHead | None:
    """The head (ending in CRLF CRLF) as a RequestHead if it has the ordinary shape, else None."""
    request = _REQUEST_LINE.match(head)
    if request is None or request.end() - 2 > limits.line:
        return None
    collector = _Fields()
    try:
        HttpRequestParser(collector).feed_data(head)
    except _FAILED:
        return None
    fields = collector.fields
    lines = len(fields) + 2  # the request line, each field, the empty line
    if head.count(b"\r\n") != lines or head.translate(None, _VISIBLE) != b"\r\n" * lines or b" \r" in head:
        return None
    if lines > limits.fields + 2 or len(head) > limits.field_size and _longest_field(head) > limits.field_size:
        return None
    named = dict(fields)
    if len(named) != lines - 2 or b"transfer-encoding" in named:
        return None
    if limits.header_map == "refuse" and b"_" in b"".join(named):
        return None
    length = named.get(b"content-length")
    if length is not None and not SHORT_DIGITS.match(length):
        return None
    version = b"1.1" if request.group(3) == b"1" else b"1.0"
    return ordinary_head(request.group(1), request.group(2), version, fields, leftover, named.get(b"host"),
                         None if length is None else int(length), named.get(b"connection", b""),
                         named.get(b"expect", b""))


def _longest_field(head: bytes) -> int:
    """The longest field line of a head (only asked when the head is longer than the limit)."""
    return max(map(len, head.split(b"\r\n")[1:]))
