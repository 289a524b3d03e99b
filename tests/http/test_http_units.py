"""Unit tests of the pure-ish parts of the request path (in addition to the end-to-end corpus):
the body decoder over a socketpair fed in random pieces, empty-line skipping, error replies, the
Date header."""

from __future__ import annotations

import random
import socket
import threading
from email.utils import formatdate
from typing import Self

import pytest

from forkserve.http.body import BodyDecoder, RequestBody
from forkserve.http.dates import imf_fixdate
from forkserve.http.errors import HttpError, error_reply
from forkserve.http.head import _skip_empty_lines


class Fed:
    """A RequestBody reading from a socketpair whose other end (``client``) sends ``pieces``."""

    def __init__(self, pieces: list[bytes], **options) -> None:
        self.server, self.client = socket.socketpair()
        self.server.setblocking(False)  # as the worker's loop holds it
        given = {"limit": 0, "pending": b"", "content_length": None, "chunked": True, "expect_continue": False}
        given.update(options)
        decoder = BodyDecoder(given["content_length"], given["chunked"], given["limit"])
        self.body = RequestBody(self.server, 5.0, decoder, given["expect_continue"], None, given["pending"])
        self.feeder = threading.Thread(target=self._feed, args=(pieces,), daemon=True)
        self.feeder.start()

    def _feed(self, pieces: list[bytes]) -> None:
        try:
            for piece in pieces:
                self.client.sendall(piece)
        except OSError:
            pass  # the test is done with the rest

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.feeder.join(5)
        self.server.close()
        self.client.close()


def random_pieces(data: bytes, rng: random.Random) -> list[bytes]:
    pieces, index = [], 0
    while index < len(data):
        size = rng.choice([1, 2, 3, 7, 64, 1000])
        pieces.append(data[index:index + size])
        index += size
    return pieces


@pytest.mark.parametrize("seed", range(8))
def test_chunked_decoding_in_any_split_keeps_the_pipelined_rest(seed: int) -> None:
    rng = random.Random(seed)
    payload = bytes(rng.randrange(256) for _ in range(5000))
    sizes = [rng.randrange(1, 700) for _ in range(20)]
    wire, index = b"", 0
    for size in sizes:
        piece = payload[index:index + size]
        if not piece:
            break
        wire += b"%X;ext=%d\r\n%s\r\n" % (len(piece), size, piece)
        index += size
    payload = payload[:index]
    tail = b"GET /next HTTP/1.1\r\n"
    wire += b"0\r\nX-Trailer: yes\r\n\r\n" + tail
    with Fed(random_pieces(wire, rng)) as fed:
        body = fed.body
        got = b""
        while chunk := body.read(rng.choice([1, 13, 4096])):
            got += chunk
        assert got == payload and body.complete
        # What came after the body stays for the next request (maybe not all of it yet).
        assert tail.startswith(body.leftover)


@pytest.mark.parametrize(("wire", "status"), [
    (b"5\r\nhello\r\n0\n", 400),
    (b"5 \r\nhello\r\n0\r\n\r\n", 400),
    (b"5\r\nhelloX", 400),
    (b"5\r\nhello\r\n0\r\nContent-Length: 1\r\n\r\n", 400),
    (b"5\r\nhello\r\n0\r\nX: y\n", 400),
    (b"7d1\r\n", 413),  # 2001 > the limit of 2000
])
def test_chunked_errors_come_without_waiting(wire: bytes, status: int) -> None:
    with Fed([wire], limit=2000) as fed, pytest.raises(HttpError) as raised:
        fed.body.read()  # a wait for more bytes would end in the 5 s timeout: 408
    assert raised.value.status == status and fed.body.failure is raised.value


def test_content_length_body_never_reads_past_its_end() -> None:
    with Fed([b"hel", b"lo", b"GET / HTTP/1.1\r\n"], chunked=False, content_length=5) as fed:
        assert fed.body.readline() == b"hello" and fed.body.read() == b"" and fed.body.complete


def test_100_continue_goes_out_at_the_first_read_only() -> None:
    with Fed([], chunked=False, content_length=5, expect_continue=True) as fed:
        assert fed.body.continue_pending
        fed.client.sendall(b"hello")
        assert fed.body.read(5) == b"hello"
        assert fed.client.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert not fed.body.continue_pending


@pytest.mark.parametrize(("raw", "rest"), [
    (b"\r\n", b""), (b"\r", b""), (b"\r\nGET", b"GET"), (b"\r\n\r\nGET", b"GET"), (b"GET", b"GET"),
])
def test_skip_empty_lines(raw: bytes, rest: bytes) -> None:
    assert _skip_empty_lines(raw) == rest


@pytest.mark.parametrize("raw", [b"\n", b"\r\rGET", b"\rGET", b"\r\n" * 9 + b"GET", b"\r\n\nGET"])
def test_skip_empty_lines_refuses_bare_or_too_many(raw: bytes) -> None:
    with pytest.raises(HttpError):
        _skip_empty_lines(raw)


def test_error_reply_shape() -> None:
    head, _, body = error_reply(431).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"\r\nConnection: close" in head and f"Content-Length: {len(body)}".encode() in head
    assert body == b"431 Request Header Fields Too Large\n"


def test_date_header_matches_the_standard_library_formatter() -> None:
    """The Date header is formatted without the email package (memory); it must still agree
    with ``email.utils.formatdate`` to the character, across days, months and leap years."""
    rng = random.Random(9110)
    seconds = [0, 784111777, 951782400, 1709164800, 2**31 - 1, *(rng.randrange(0, 2**34) for _ in range(5000))]
    for second in seconds:
        assert imf_fixdate(second) == formatdate(second, usegmt=True), second
