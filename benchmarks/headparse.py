"""What a C parser would save: one request head through each parser, timed in-process.

Issue 17 asks whether an optional C parser (httptools, llhttp) pays once forkserve has its fast
path for ordinary heads. This times, per head, in one process:

- ``strict``: the h11 path every unusual head takes (forkserve's checks, then ``h11.Request``);
- ``fast``: forkserve's one-pass fast path (``forkserve.http.head.fast_head``), which ordinary
  heads take;
- ``httptools``: llhttp through httptools' callbacks, collecting the same fields, and then the
  checks forkserve would still have to make itself on top of it to be held to what h11 is held to
  (the request-line shape and version, one Host and its syntax, Content-Length digits and no
  duplicate, no Transfer-Encoding on the fast shape, field names' underscores, the limits,
  Connection tokens) — a prototype written to be fast, not a shipped parser. Skipped when
  httptools is not installed (``pip install httptools``).

Each on a browser-like GET with 8 fields, a 3-field curl GET and a POST with a body. Run:
``python -m benchmarks.headparse``. The figure is the median of several timing rounds, in µs per
head; run it on a quiet machine.
"""

from __future__ import annotations

import re
import statistics
import sys
import timeit
from collections.abc import Callable

from forkserve.http.head import HeadLimits, RequestHead, _describe, fast_head, parse_head

LIMITS = HeadLimits(line=4094, fields=100, field_size=8190, head_timeout=10.0, header_map="drop",
                    permit_folding=False)
HEADS = {
    "browser GET, 8 fields": (
        b"GET /articles/2024/hello-world?ref=home&page=2 HTTP/1.1\r\n"
        b"Host: www.example.com\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
        b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
        b"Accept-Language: en-US,en;q=0.5\r\n"
        b"Accept-Encoding: gzip, deflate, br\r\n"
        b"Connection: keep-alive\r\n"
        b"Cookie: sessionid=abcdef0123456789; csrftoken=0123456789abcdef\r\n"
        b"Upgrade-Insecure-Requests: 1\r\n\r\n"
    ),
    "curl GET, 3 fields": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
    "POST with a body, 5 fields": (
        b"POST /api/items HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n"
        b"Content-Length: 27\r\nAccept: application/json\r\nAuthorization: Bearer abc.def.ghi\r\n\r\n"
    ),
}
ROUNDS = 7

_METHOD_TARGET = re.compile(rb"(GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS) (/[\x21-\x7e]*) HTTP/1\.([01])\r\n")
_DIGITS = re.compile(rb"[0-9]{1,18}\Z")
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9!$&'()*+,;=._~%-]*)(?::[0-9]*)?\Z")


def strict(head: bytes) -> RequestHead:
    return _describe(parse_head(head, LIMITS), b"")


def fast(head: bytes) -> RequestHead | None:
    return fast_head(head, b"", LIMITS)


def httptools_parser() -> Callable[[bytes], RequestHead | None] | None:
    """The httptools prototype, or None when httptools is not installed."""
    try:
        import httptools
    except ImportError:
        return None

    class Collector:
        __slots__ = ("fields", "name", "url")

        def __init__(self) -> None:
            self.fields: list[tuple[bytes, bytes]] = []
            self.name = b""
            self.url = b""

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.fields.append((name.lower(), value))

    def parse(head: bytes) -> RequestHead | None:
        collector = Collector()
        parser = httptools.HttpRequestParser(collector)
        try:
            parser.feed_data(head)
        except httptools.HttpParserError:
            return None
        line = _METHOD_TARGET.match(head)  # llhttp takes lower-case and odd versions: forkserve does not
        if line is None:
            return None
        fields = collector.fields
        if len(fields) > LIMITS.fields:
            return None
        host = None
        content_length = None
        connection = b""
        for name, value in fields:
            if len(name) + len(value) + 2 > LIMITS.field_size:
                return None
            if name == b"host":
                if host is not None:
                    return None
                host = value
            elif name == b"content-length":
                if content_length is not None or not _DIGITS.match(value):
                    return None
                content_length = int(value)
            elif name == b"transfer-encoding":
                return None
            elif name == b"connection":
                connection = value if not connection else connection + b"," + value
            elif b"_" in name:
                return None
        version = b"1.1" if line.group(3) == b"1" else b"1.0"
        if host is None or not _HOST.match(host):
            return None
        tokens = {token.strip().lower() for token in connection.split(b",")} if connection else set()
        return RequestHead(
            method=line.group(1), target=collector.url, version=version, headers=fields, leftover=b"",
            keep_alive=b"close" not in tokens and (version == b"1.1" or b"keep-alive" in tokens),
            must_close=False, chunked=False, content_length=content_length, expect_continue=False, host=host,
        )

    return parse


def per_head_us(parse: Callable[[bytes], object], head: bytes) -> float:
    """Median µs per call over ROUNDS rounds."""
    timer = timeit.Timer(lambda: parse(head))
    number, _ = timer.autorange()
    return statistics.median(timer.repeat(ROUNDS, number)) / number * 1e6


def main() -> int:
    parsers: dict[str, Callable[[bytes], object]] = {"strict (h11)": strict, "fast path": fast}
    prototype = httptools_parser()
    if prototype is None:
        print("httptools is not installed: its column is left out (pip install httptools)", file=sys.stderr)
    else:
        parsers["httptools + checks"] = prototype
    for name, head in HEADS.items():
        assert fast(head) is not None and (prototype is None or prototype(head) is not None), name
    print("| head | " + " | ".join(f"{name} µs" for name in parsers) + " |")
    print("|---|" + "---|" * len(parsers))
    for name, head in HEADS.items():
        print(f"| {name} | " + " | ".join(f"{per_head_us(parse, head):.2f}" for parse in parsers.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
