"""What a checked request head is, the limits it is checked against, and the facts an ordinary
head decides.

Three readers make a :class:`RequestHead`: the strict path (forkserve's checks, then h11) and the
two one-pass readers for ordinary heads, the regular-expression fast path and the optional
llhttp one. Both one-pass readers must build exactly the RequestHead the strict path would, so
what an ordinary head's few deciding fields mean (Host, Connection, Expect) is written once, in
:func:`ordinary_head`, and the readers only differ in how they find those fields. This module
imports nothing else of forkserve's HTTP layer, so each reader can import it without a cycle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from forkserve.settings.gunicorn_compat import httptools_missing
from forkserve.settings.registry import Config

HARD_LINE_LIMIT = 65536
HARD_FIELD_LIMIT = 32768
HARD_HEAD_LIMIT = 1 << 20

# Host: an IP literal or a reg-name (RFC 3986 3.2.2), an optional port.
HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9!$&'()*+,;=._~%-]*)(?::[0-9]*)?\Z")
# An ordinary request line (both one-pass readers): a common method, an origin-form target of
# visible ASCII, HTTP/1.0 or 1.1; each reader anchors it to its own end.
ORDINARY_REQUEST_LINE = rb"(GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS) (/[\x21-\x7e]*) HTTP/1\.([01])"
# Content-Length on the one-pass paths: plain digits, short enough to be an int cheaply.
SHORT_DIGITS = re.compile(rb"[0-9]{1,18}\Z")


@dataclass(frozen=True)
class HeadLimits:
    """The request limits from the settings, resolved to concrete numbers once per worker, and
    the reader ordinary heads take (``parser``: 'h11' for the fast path, 'httptools' for llhttp;
    'auto' is resolved here, so each worker decides once)."""

    line: int
    fields: int
    field_size: int
    head_timeout: float
    header_map: str
    permit_folding: bool
    parser: str = "h11"

    @property
    def head_size(self) -> int:
        return min(self.line + 2 + self.fields * (self.field_size + 2) + 2, HARD_HEAD_LIMIT)

    @classmethod
    def from_config(cls, config: Config) -> HeadLimits:
        return cls(
            line=config.limit_request_line or HARD_LINE_LIMIT,
            fields=config.limit_request_fields or HARD_FIELD_LIMIT,
            field_size=config.limit_request_field_size or HARD_LINE_LIMIT,
            head_timeout=config.header_timeout,
            header_map=config.header_map,
            permit_folding=config.permit_obsolete_folding,
            parser=resolve_parser(config.http_parser),
        )


def resolve_parser(name: str) -> str:
    """'auto' becomes 'httptools' when httptools imports, else 'h11'; the others stay. (An
    explicit 'httptools' that cannot import is refused when the settings are read.)"""
    if name != "auto":
        return name
    return "h11" if httptools_missing() else "httptools"


@dataclass(slots=True)
class RequestHead:
    """A parsed, checked request head, and the bytes received after it (body, next request)."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    leftover: bytes
    keep_alive: bool
    must_close: bool
    chunked: bool
    content_length: int | None
    expect_continue: bool
    host: bytes


def header_tokens(value: bytes) -> set[bytes]:
    """A comma-separated field's tokens, lower case (Connection, Expect)."""
    return {token.strip().lower() for token in value.split(b",")}


def ordinary_head(method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]],
                  leftover: bytes, host: bytes | None, content_length: int | None, connection: bytes,
                  expect: bytes) -> RequestHead | None:
    """The RequestHead of an ordinary head (origin-form target, HTTP/1.0 or 1.1, no
    Transfer-Encoding, at most one Host and one Content-Length) from the fields that decide it,
    as the strict path reads it; None when Host is missing in HTTP/1.1 or malformed, which is
    the strict path's to refuse. ``connection``: every Connection field, joined with commas."""
    if host is None:
        if version == b"1.1":
            return None
        host = b""
    elif not HOST.match(host):
        return None
    if connection:
        tokens = header_tokens(connection)
        keep_alive = b"close" not in tokens and (version == b"1.1" or b"keep-alive" in tokens)
    else:
        keep_alive = version == b"1.1"
    # (Positional: a slotted dataclass takes keywords at twice the cost, on every request.)
    return RequestHead(method, target, version, headers, leftover, keep_alive, False, False, content_length,
                       bool(expect) and version == b"1.1" and b"100-continue" in header_tokens(expect), host)
