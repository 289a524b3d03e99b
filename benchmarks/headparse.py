"""What the C parser saves: one request head through each parser's path, timed in-process.

Issue 17 asked whether an optional C parser (httptools, llhttp) pays once forkserve has its fast
path for ordinary heads. This times, per head, in one process:

- ``strict``: the h11 path every unusual head takes (forkserve's checks, then ``h11.Request``);
- ``fast``: forkserve's one-pass fast path (``forkserve.http.head.fast_head``), which ordinary
  heads take with the default ``http_parser = 'h11'``;
- ``llhttp``: the reader ordinary heads take with ``http_parser = 'httptools'``
  (``forkserve.http.llhttp_head.httptools_head``): llhttp splits the head, forkserve checks it has
  the fast path's shape. Left out when httptools is not installed (``pip install 'forkserve[fast]'``).

Each on a browser-like GET with 8 fields, the same with 1.5 KB of cookies, a 3-field curl GET and
a POST with a body. Run: ``python -m benchmarks.headparse``. The figure is the median of several
timing rounds, in µs per head; run it on a quiet machine.
"""

from __future__ import annotations

import statistics
import sys
import timeit
from collections.abc import Callable

from forkserve.http.head import HeadLimits, OrdinaryReader, RequestHead, _describe, fast_head, parse_head

LIMITS = HeadLimits(line=4094, fields=100, field_size=8190, head_timeout=10.0, header_map="drop",
                    permit_folding=False)
BROWSER = (
    b"GET /articles/2024/hello-world?ref=home&page=2 HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: sessionid=abcdef0123456789; csrftoken=0123456789abcdef\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n\r\n"
)
COOKIES = b"; ".join(b"c%02d=%s" % (i, b"0123456789abcdef" * 2) for i in range(40))  # 1.5 KB
HEADS = {
    "browser GET, 8 fields": BROWSER,
    "browser GET, 1.5 KB of cookies": BROWSER.replace(b"sessionid=abcdef0123456789; csrftoken=0123456789abcdef",
                                                      COOKIES),
    "curl GET, 3 fields": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
    "POST with a body, 5 fields": (
        b"POST /api/items HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n"
        b"Content-Length: 27\r\nAccept: application/json\r\nAuthorization: Bearer abc.def.ghi\r\n\r\n"
    ),
}
ROUNDS = 7


def strict(head: bytes) -> RequestHead:
    return _describe(parse_head(head, LIMITS), b"")


def fast(head: bytes) -> RequestHead | None:
    return fast_head(head, b"", LIMITS)


def llhttp() -> OrdinaryReader | None:
    """llhttp's reader of ordinary heads, or None when httptools is not installed."""
    try:
        from forkserve.http.llhttp_head import httptools_head
    except ImportError:
        return None
    return httptools_head


def per_head_us(parse: Callable[[bytes], object], head: bytes) -> float:
    """Median µs per call over ROUNDS rounds."""
    timer = timeit.Timer(lambda: parse(head))
    number, _ = timer.autorange()
    return statistics.median(timer.repeat(ROUNDS, number)) / number * 1e6


def main() -> int:
    parsers: dict[str, Callable[[bytes], object]] = {"strict (h11)": strict, "fast path": fast}
    reader = llhttp()
    if reader is None:
        print("httptools is not installed: its column is left out (pip install 'forkserve[fast]')", file=sys.stderr)
    else:
        parsers["llhttp (httptools)"] = lambda head: reader(head, b"", LIMITS)
    for name, head in HEADS.items():
        assert all(parse(head) == strict(head) for parse in parsers.values()), name  # ordinary: each path reads it
    print("| head | " + " | ".join(f"{name} µs" for name in parsers) + " |")
    print("|---|" + "---|" * len(parsers))
    for name, head in HEADS.items():
        print(f"| {name} | " + " | ".join(f"{per_head_us(parse, head):.2f}" for parse in parsers.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
