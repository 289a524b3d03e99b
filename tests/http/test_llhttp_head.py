"""llhttp's reader of ordinary heads (``http_parser = 'httptools'``): what llhttp lets through that
the strict path refuses or reads otherwise must come out None, so both parsers give a connection
the same outcome; the installed llhttp is held to what the reader takes from it (names); and
each worker picks its reader once, importing httptools only when it chose it.

tests/http/test_fasthead.py holds both one-pass readers to the strict path's reading, on
generated heads; tests/fuzz runs the differential between the two parsers on fuzzed streams.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import httptools
import pytest
from conftest import ROOT

from forkserve.http.errors import HttpError
from forkserve.http.head import HeadLimits, HeadReader, RequestHead, fast_head
from forkserve.http.llhttp_head import httptools_head
from forkserve.http.requesthead import resolve_parser
from forkserve.settings.registry import defaults

H11 = HeadLimits.from_config(defaults())
HTTPTOOLS = dataclasses.replace(H11, parser="httptools")
SMALL = dataclasses.replace(HTTPTOOLS, line=30, fields=3, field_size=40)


def outcome(limits: HeadLimits, data: bytes) -> RequestHead | tuple[int, str] | None:
    """What a connection reading ``data`` with these limits gets: the head, or the refusal."""
    try:
        return HeadReader(limits).feed(data)
    except HttpError as error:
        return error.status, error.reason


def same_outcome(data: bytes, limits: HeadLimits = HTTPTOOLS) -> RequestHead | tuple[int, str] | None:
    """The outcome with llhttp's reader, checked to be the one the default path gives."""
    read = outcome(limits, data)
    assert read == outcome(dataclasses.replace(limits, parser="h11"), data), data
    return read


# Heads llhttp reads (some of them with the default flags of one llhttp version or another) that
# the strict path refuses, or reads otherwise: each must be left to the strict path.
LENIENT = {
    "two Host fields": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "two Host fields, one empty": b"GET / HTTP/1.1\r\nHost: a\r\nhost:\r\n\r\n",
    "lower-case method": b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    "unknown method": b"PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n",
    "HTTP/2.0": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "HTTP/0.9": b"GET / HTTP/0.9\r\nHost: a\r\n\r\n",
    "two spaces": b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    "absolute form": b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    "asterisk": b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "CONNECT": b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    "bare CR": b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
    "tab in a value": b"GET / HTTP/1.1\r\nHost: a\r\nX: b\tc\r\n\r\n",
    "tab before a value": b"GET / HTTP/1.1\r\nHost: a\r\nX:\tb\r\n\r\n",
    "trailing spaces (llhttp keeps them)": b"GET / HTTP/1.1\r\nHost: a\r\nX: b  \r\n\r\n",
    "trailing space after Host": b"GET / HTTP/1.1\r\nHost: a \r\n\r\n",
    "trailing tab": b"GET / HTTP/1.1\r\nHost: a\r\nX: b\t\r\n\r\n",
    "only spaces": b"GET / HTTP/1.1\r\nHost: a\r\nX:   \r\n\r\n",
    "obs-text": b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
    "control byte": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x0bb\r\n\r\n",
    "DEL": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
    "NUL": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    "space before the colon": b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "no colon": b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
    "no name": b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n",
    "separator in a name": b"GET / HTTP/1.1\r\nHost: a\r\nX(y): v\r\n\r\n",
    "two Content-Length": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
    "Content-Length list": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n",
    "Content-Length sign": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
    "Content-Length overflow": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
    "chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    "chunked in HTTP/1.0": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    "chunked and a length": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
    "no Host": b"GET / HTTP/1.1\r\nX: b\r\n\r\n",
    "malformed Host": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "Host with userinfo": b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
    "upgrade (llhttp pauses)": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    "repeated Cookie": b"GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
    "repeated Connection": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
    "name repeated in another case": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
    "control byte in the target": b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
    "obs-text in the target": b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("head", LENIENT.values(), ids=LENIENT.keys())
def test_what_llhttp_lets_through_is_left_to_the_strict_path(head: bytes) -> None:
    assert httptools_head(head, b"", HTTPTOOLS) is None
    same_outcome(head)


def test_two_host_fields_get_400_with_both_parsers() -> None:
    """The case the first quick trial of a parser swap got wrong (200 instead of 400)."""
    status, _ = same_outcome(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert status == 400


@pytest.mark.parametrize(("head", "status"), [
    (b"GET /" + b"a" * 40 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 40 + b"\r\n\r\n", 431),
])
def test_the_limits_hold_with_both_parsers(head: bytes, status: int) -> None:
    assert httptools_head(head, b"", SMALL) is None
    assert same_outcome(head, SMALL)[0] == status


def test_heads_within_the_limits_are_read_by_llhttp() -> None:
    """At the limits exactly: a 30-byte line, 3 fields, one of 40 bytes."""
    head = b"GET /" + b"a" * 16 + b" HTTP/1.1\r\nHost: a\r\nB: 2\r\nX: " + b"v" * 37 + b"\r\n\r\n"
    assert len(head.split(b"\r\n")[0]) == 30 and max(map(len, head.split(b"\r\n")[1:])) == 40
    read = httptools_head(head, b"", SMALL)
    assert read is not None and read == same_outcome(head, SMALL)


@pytest.mark.parametrize("header_map", ["drop", "refuse", "dangerous"])
def test_underscore_names_follow_header_map(header_map: str) -> None:
    limits = dataclasses.replace(HTTPTOOLS, header_map=header_map)
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX_Under: 1\r\n\r\n"
    read = same_outcome(head, limits)
    assert (read is None or isinstance(read, tuple)) == (header_map == "refuse")
    assert (httptools_head(head, b"", limits) is None) == (header_map == "refuse")


def test_an_ordinary_head_and_what_follows_it_read_alike() -> None:
    head = (b"POST /api?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nConnection: keep-alive, Upgrade-ish\r\nExpect: 100-continue\r\n"
            b"X-Empty:\r\nX-Spaces:    a  b\r\n\r\n")
    read = same_outcome(head + b"{}GET")
    assert read == httptools_head(head, b"{}GET", HTTPTOOLS) == fast_head(head, b"{}GET", H11)
    assert (read.content_length, read.expect_continue, read.keep_alive, read.host) == (2, True, True, b"example.com:8080")
    assert read.headers[-2:] == [(b"x-empty", b""), (b"x-spaces", b"a  b")]
    http10 = same_outcome(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    assert (http10.keep_alive, http10.host) == (True, b"")


def _llhttp_refuses(head: bytes) -> bool:
    try:
        httptools.HttpRequestParser(object()).feed_data(head)
    except httptools.HttpParserError:
        return True
    return False


@pytest.mark.parametrize("name", [b"Host ", b"Host\t", b"X(y)", b"X/y", b"X y", b"", b"X\x00", b"X\xff", b"X\"y"])
def test_the_installed_llhttp_splits_only_at_a_token_and_a_colon(name: bytes) -> None:
    """The one thing the reader takes from llhttp unchecked: a field's name is a token followed
    at once by the colon (llhttp relaxes that only when told to be lenient, which forkserve
    never does). An httptools upgrade that changed it fails here."""
    assert _llhttp_refuses(b"GET / HTTP/1.1\r\nHost: a\r\n" + name + b": v\r\n\r\n")
    assert _llhttp_refuses(b"GET / HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n")


# -- choosing the reader --------------------------------------------------------------------------


def test_each_reader_is_chosen_once_per_connection_from_the_limits() -> None:
    assert HeadReader(H11).ordinary is fast_head
    assert HeadReader(HTTPTOOLS).ordinary is httptools_head
    assert (H11.parser, HeadLimits.from_config(_config("httptools")).parser) == ("h11", "httptools")


def _config(parser: str):
    config = defaults()
    config.set("http_parser", parser, "test")
    return config


def test_auto_is_httptools_when_it_imports() -> None:
    assert resolve_parser("auto") == "httptools"
    assert HeadLimits.from_config(_config("auto")).parser == "httptools"


def _python(code: str) -> str:
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                               timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    return completed.stdout.strip()


def test_auto_is_h11_without_httptools_and_h11_never_imports_it() -> None:
    """Without httptools (its import made to fail), 'auto' reads with the fast path; and a worker
    on 'h11' reads heads without ever importing httptools."""
    setup = ("import sys\nfrom forkserve.http.head import HeadLimits, HeadReader\n"
             "from forkserve.settings.registry import defaults\nconfig = defaults()\n")
    assert _python(setup + "sys.modules['httptools'] = None\nconfig.set('http_parser', 'auto', 'test')\n"
                   "reader = HeadReader(HeadLimits.from_config(config))\n"
                   "print(reader.limits.parser, reader.ordinary.__name__)") == "h11 fast_head"
    assert _python(setup + "reader = HeadReader(HeadLimits.from_config(config))\n"
                   "reader.feed(b'GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n')\n"
                   "print(reader.ordinary.__name__, 'httptools' in sys.modules)") == "fast_head False"
