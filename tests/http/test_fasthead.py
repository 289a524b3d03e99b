"""The one-pass readers of ordinary heads against the strict path (forkserve's checks, then h11):
the fast path, and llhttp's (``http_parser = 'httptools'``). For every head a reader takes, the
strict path must take it too and read exactly the same request; a head it does not take is left
to the strict path (never refused by it). tests/http/test_llhttp_head.py has what is llhttp's
own: the leniencies it must not pass on, and the choice of reader."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forkserve.http.head import HeadLimits, _describe, fast_head, parse_head
from forkserve.http.llhttp_head import httptools_head
from forkserve.settings.registry import defaults

LIMITS = HeadLimits.from_config(defaults())
TOKEN = st.text(alphabet="!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-",
                min_size=1, max_size=12)
VALUE = st.one_of(
    st.text(alphabet=[chr(code) for code in range(0x20, 0x7f)], max_size=20).map(str.encode),  # plain
    st.binary(max_size=20).map(lambda raw: bytes(byte % 128 for byte in raw)),  # CTLs, tabs, CR, LF too
)
NAMES = st.one_of(TOKEN.map(str.encode), st.sampled_from(
    [b"Host", b"host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect", b"X_Under", b"Cookie"]))
FIELD = st.tuples(NAMES, st.sampled_from([b": ", b": ", b":", b":  ", b" :", b":\t"]), VALUE)
METHODS = st.sampled_from([b"GET", b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE", b"get"])
TARGETS = st.one_of(
    st.text(alphabet=[chr(code) for code in range(0x21, 0x7f)], max_size=12).map(lambda text: b"/" + text.encode()),
    st.sampled_from([b"*", b"http://h/x", b"/\xff"]),
    st.binary(max_size=10).map(lambda raw: b"/" + raw),
)
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"])


READERS = [pytest.param(fast_head, id="fast"), pytest.param(httptools_head, id="httptools")]


def strict(head: bytes, leftover: bytes):
    try:
        return _describe(parse_head(head, LIMITS), leftover)
    except Exception as error:  # noqa: BLE001 -- any refusal counts as "not taken"
        return error


TAKEN: Counter[str] = Counter()  # heads each reader took, for the check that it was exercised


@pytest.mark.parametrize("reader", READERS)
@settings(max_examples=600, deadline=None, database=None, derandomize=True)
@given(METHODS, TARGETS, VERSIONS, st.lists(FIELD, max_size=8), st.booleans())
def test_a_reader_reads_what_the_strict_path_reads(reader, method, target, version, fields, with_host) -> None:
    if with_host:
        fields = [(b"Host", b": ", b"example.com"), *(field for field in fields if field[0].lower() != b"host")]
    head = method + b" " + target + b" " + version + b"\r\n" + b"".join(
        name + colon + value + b"\r\n" for name, colon, value in fields) + b"\r\n"
    read = reader(head, b"rest", LIMITS)
    if read is not None:
        TAKEN[reader.__name__] += 1
        assert strict(head, b"rest") == read, head


PLAIN = st.text(alphabet=[chr(code) for code in range(0x20, 0x7f)], max_size=20).map(str.encode)


@pytest.mark.parametrize("reader", READERS)
@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT"]), TARGETS, st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
       st.lists(st.tuples(NAMES, st.sampled_from([b": ", b":", b":   "]), PLAIN), max_size=10))
def test_plain_heads_read_the_same_on_both_paths(reader, method, target, version, fields) -> None:
    """Mostly ordinary heads (plain values, odd names, duplicates of the fields that decide
    framing), so the readers take many of them."""
    fields = [(b"Host", b": ", b"example.com"), *(field for field in fields if field[0].lower() != b"host")]
    head = method + b" " + target + b" " + version + b"\r\n" + b"".join(
        name + colon + value + b"\r\n" for name, colon, value in fields) + b"\r\n"
    read = reader(head, b"", LIMITS)
    if read is not None:
        TAKEN[reader.__name__] += 1
        assert strict(head, b"") == read, head


@pytest.mark.parametrize("reader", READERS)
def test_the_comparisons_above_exercised_each_reader(reader) -> None:
    # (llhttp's reader takes fewer: it leaves any repeated name to the strict path, and the
    # generators above repeat names often.)
    assert TAKEN[reader.__name__] > (100 if reader is fast_head else 50), TAKEN


@pytest.mark.parametrize("reader", READERS)
def test_ordinary_heads_take_the_one_pass_readers(reader) -> None:
    browser = (b"GET /static/app.js?v=3 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 (X11)\r\n"
               b"Accept: */*\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n"
               b"Cookie: a=1; b=2\r\n\r\n")
    post = b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n"
    for head in (browser, post, b"GET / HTTP/1.0\r\n\r\n"):
        read = reader(head, b"", LIMITS)
        assert read is not None and read == strict(head, b""), head


@pytest.mark.parametrize("reader", READERS)
def test_unusual_heads_are_left_to_the_strict_path(reader) -> None:
    for head in (
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # a refusal is the strict path's to say
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX:\tb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
    ):
        assert reader(head, b"", LIMITS) is None, head
