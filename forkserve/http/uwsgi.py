"""nginx's ``uwsgi_pass``: the uwsgi packet a request arrives in, and the environ it becomes.

A packet is a 4-byte header — ``modifier1`` (0: a WSGI request), the size of what follows
(little-endian 16 bits), ``modifier2`` (0) — then that many bytes of variables, each a
little-endian 16-bit length and the key, then the same for the value. The variables are the
CGI/WSGI environ nginx built (``uwsgi_params``: ``REQUEST_METHOD``, ``REQUEST_URI``,
``PATH_INFO``, ``QUERY_STRING``, ``CONTENT_LENGTH``, ``HTTP_*``, ``REMOTE_ADDR``, ...); the body
(``CONTENT_LENGTH`` bytes) follows the packet. Parsed strictly: a wrong modifier, sizes that do
not add up, an empty or oversized key, a missing ``REQUEST_METHOD``, or a bad
``CONTENT_LENGTH`` is refused (the connection is closed: the peer is a proxy, and it gets no
HTTP reply on this protocol). The response is written as HTTP/1.1, which is what nginx's uwsgi
module reads back, and the connection closes after it.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from forkserve.http.environ import EnvironBuilder
from forkserve.http.head import RequestHead

_HEADER = struct.Struct("<BHB")
_LENGTH = struct.Struct("<H")
_DIGITS = re.compile(r"[0-9]{1,18}\Z")
_KEY = re.compile(rb"[A-Za-z0-9_.\-]+\Z")
MAX_VARS = 512


class UwsgiError(Exception):
    """A malformed uwsgi packet: the connection is closed."""


class UwsgiReader:
    """Reads one request's packet; ``feed`` returns None until it is complete, then the head."""

    __slots__ = ("buffer", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = b""

    @property
    def started(self) -> bool:
        return bool(self.buffer)

    def feed(self, data: bytes) -> RequestHead | None:
        buffer = self.buffer + data
        self.buffer = buffer
        if len(buffer) < _HEADER.size:
            return None
        modifier1, size, modifier2 = _HEADER.unpack_from(buffer)
        if modifier1 != 0 or modifier2 != 0:
            raise UwsgiError(f"uwsgi packet with modifiers {modifier1}/{modifier2} (only 0/0: a WSGI request)")
        if size > self.limit:
            raise UwsgiError(f"uwsgi packet of {size} bytes over the limit of {self.limit}")
        end = _HEADER.size + size
        if len(buffer) < end:
            return None
        self.buffer = b""
        return request_head(parse_vars(buffer[_HEADER.size:end]), buffer[end:])


def parse_vars(block: bytes) -> dict[str, str]:
    """The variables of a packet's body (its lengths must account for every byte)."""
    found: dict[str, str] = {}
    offset = 0
    while offset < len(block):
        key, offset = _string(block, offset, "key")
        value, offset = _string(block, offset, "value")
        if not key or not _KEY.match(key):
            raise UwsgiError(f"bad variable name {key[:40]!r} in a uwsgi packet")
        if len(found) >= MAX_VARS:
            raise UwsgiError(f"more than {MAX_VARS} variables in a uwsgi packet")
        found[key.decode("latin-1")] = value.decode("latin-1")
    return found


def _string(block: bytes, offset: int, what: str) -> tuple[bytes, int]:
    if len(block) - offset < _LENGTH.size:
        raise UwsgiError(f"truncated {what} length in a uwsgi packet")
    (length,) = _LENGTH.unpack_from(block, offset)
    start = offset + _LENGTH.size
    if start + length > len(block):
        raise UwsgiError(f"a {what} runs past the end of the uwsgi packet")
    return block[start:start + length], start + length


def request_head(variables: dict[str, str], leftover: bytes) -> RequestHead:
    """A RequestHead for the request runner: framing from CONTENT_LENGTH, the variables kept."""
    method = variables.get("REQUEST_METHOD")
    if not method:
        raise UwsgiError("uwsgi packet without REQUEST_METHOD")
    length_text = variables.get("CONTENT_LENGTH", "")
    if length_text and not _DIGITS.match(length_text):
        raise UwsgiError(f"bad CONTENT_LENGTH {length_text[:20]!r} in a uwsgi packet")
    target = variables.get("REQUEST_URI") or variables.get("PATH_INFO", "/")
    protocol = variables.get("SERVER_PROTOCOL", "HTTP/1.1")
    return UwsgiHead(
        method=method.encode("latin-1"),
        target=target.encode("latin-1"),
        version=b"1.0" if protocol == "HTTP/1.0" else b"1.1",
        headers=[],
        leftover=leftover,
        keep_alive=False,  # one request per connection: nginx closes it after the response
        must_close=True,
        chunked=False,
        content_length=int(length_text) if length_text else None,
        expect_continue=False,
        host=variables.get("HTTP_HOST", "").encode("latin-1"),
        variables=variables,
    )


class UwsgiHead(RequestHead):
    """A request head that came as uwsgi variables."""

    __slots__ = ("variables",)

    def __init__(self, *, variables: dict[str, str], **fields: Any) -> None:
        super().__init__(**fields)
        self.variables = variables


class UwsgiEnvironBuilder(EnvironBuilder):
    """The environ of a uwsgi request: the variables nginx sent, over this server's wsgi.* keys."""

    def build(self, head: RequestHead, remote_addr: str, remote_port: str, body: Any) -> dict[str, Any]:
        environ = self.base.copy()
        variables = head.variables  # type: ignore[attr-defined]
        environ.update(variables)
        environ.setdefault("PATH_INFO", "")
        environ.setdefault("QUERY_STRING", "")
        environ.setdefault("SCRIPT_NAME", "")
        environ.setdefault("SERVER_PROTOCOL", "HTTP/1.1")
        if not variables.get("CONTENT_LENGTH"):
            environ.pop("CONTENT_LENGTH", None)
        if variables.get("HTTPS", "").lower() in ("on", "1") or variables.get("REQUEST_SCHEME") == "https":
            environ["wsgi.url_scheme"] = "https"
        environ["wsgi.input"] = body
        return environ
