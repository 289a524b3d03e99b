"""The fuzzer in the test suite: a short, fixed-seed run against real servers, and proof that each
oracle fails when it should (an oracle that cannot fail would let a run pass whatever it found).

The short run is a few hundred cases with hypothesis derandomized (the same cases every time), no
example database, and no deadline (a case that holds its connection waits for the server's
timeouts). Every case is played on two servers, ``--http-parser h11`` and ``httptools``, and read
by both parsers in process (the differential oracle between them). A failure is shrunk by
hypothesis and reported with its class and details.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterator

import pytest
from conftest import wait_for
from http_wire import WireResponse
from hypothesis import HealthCheck, given, settings

from .oracles import Hit, Verdict, judge_chunking, judge_differential, judge_responses
from .parsers import both_parsers, compare, read, server_limits
from .reference import expected_environ, parse
from .runner import Fuzzer
from .server import FuzzServer
from .strategies import Case, Chunking, cases
from .wire import Exchange

SHORT_RUN_CASES = 500


@pytest.fixture(scope="module")
def fuzzers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Fuzzer]]:
    """A client of a server with each parser; the first also compares the parsers in process."""
    with FuzzServer.running(2, tmp_path_factory.mktemp("fuzz-h11")) as default, \
            FuzzServer.running(2, tmp_path_factory.mktemp("fuzz-httptools"), parser="httptools") as llhttp:
        clients = [Fuzzer(default, probe_every=1, differential=True), Fuzzer(llhttp, probe_every=1)]
        try:
            yield clients
        finally:
            for client in clients:
                client.close()


@pytest.fixture(scope="module")
def fuzzer(fuzzers: list[Fuzzer]) -> Fuzzer:
    return fuzzers[0]


@settings(max_examples=SHORT_RUN_CASES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases(hold_one_in=40, trickle_one_in=4))
def test_short_fuzz_run(fuzzers: list[Fuzzer], case: Case) -> None:
    failures = [failure for fuzzer in fuzzers for failure in fuzzer.run(case).failures]
    assert not failures, "\n".join(f"{f.kind}: {f.detail}" for f in failures)


def test_two_host_fields_are_refused_alike_by_both_parsers(fuzzers: list[Fuzzer]) -> None:
    """The case the first quick trial of a parser swap served (200 instead of 400)."""
    case = Case(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    for fuzzer in fuzzers:
        assert not fuzzer.run(case).failures
    assert [read([case.data], limits, 4096) for limits in both_parsers()] == [[(400, "Found multiple Host: headers")]] * 2


def test_a_worker_crash_is_noticed(fuzzer: Fuzzer) -> None:
    """The server-wide oracle: a worker that dies between cases fails the next one."""
    assert not fuzzer.run(Case(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")).failures
    victim = min(fuzzer.pids)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in fuzzer.server.worker_pids(), message="the killed worker to go")
    kinds = [f.kind for f in fuzzer.run(Case(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")).failures]
    assert kinds == ["worker-crash"]
    fuzzer.server.server.wait_workers(2)
    fuzzer.pids = fuzzer.server.worker_pids()


def test_the_parser_oracle_flags_a_different_reading() -> None:
    """Two readers that disagree (here: another line limit) are caught, at the head they differ on."""
    pipelined = [b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /" + b"b" * 40 + b" HTTP/1.1\r\nHost: x\r\n\r\n"]
    limits = server_limits()[0]
    assert compare(pipelined) is None
    difference = compare(pipelined, (limits, dataclasses.replace(limits, line=30)))
    assert difference is not None and difference.startswith("head 2: h11 read RequestHead(method=b'GET'")
    assert difference.endswith("h11 read (414, 'request line longer than 30 bytes')")


# -- the reference parse and the environ it predicts ----------------------------------------------


def test_reference_follows_persistence_and_skips_empty_lines() -> None:
    keep = parse(b"\r\nGET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [r.target for r in keep.requests] == [b"/a", b"/b"] and keep.end == "open"
    close = parse(b"GET /a HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
    assert [r.target for r in close.requests] == [b"/a"] and close.end == "close"
    assert parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nab").end == "incomplete"
    refused = parse(b"GET / HTTP/1.1\r\n\r\n")
    assert (refused.requests, refused.end) == ([], "error")


def test_expected_environ_normalises_like_pep_3333() -> None:
    request = parse(
        b"POST http://other:81/p%41th#frag?not-a-query HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\n"
        b"X-A: 1\r\nx-a: 2\r\nX_B: 3\r\nContent-Length: 03\r\nContent-Type: t/p\r\n\r\nabc"
    ).requests[0]
    assert expected_environ(request) == {
        "REQUEST_METHOD": "POST", "RAW_URI": "http://other:81/p%41th#frag?not-a-query", "PATH_INFO": "/pAth",
        "QUERY_STRING": "", "HTTP_HOST": "other:81", "HTTP_COOKIE": "a=1; b=2", "HTTP_X_A": "1,2",
        "CONTENT_LENGTH": "3", "CONTENT_TYPE": "t/p",
    }


# -- each oracle can fail -------------------------------------------------------------------------


def _hit(raw: bytes, body: bytes | None = b"") -> Hit:
    """The app's record of the first request in ``raw``, answered, with ``body`` read."""
    return Hit(expected_environ(parse(raw).requests[0]), answered=True, body=body)


def _differential(raw: bytes, hits: list[Hit]) -> list[str]:
    verdict = Verdict()
    judge_differential(parse(raw), hits, verdict)
    return [f.kind for f in verdict.failures]


def test_differential_oracle_flags_looser_and_different_requests() -> None:
    good = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _differential(good, [_hit(good)]) == []
    # the app got a second request, where h11 refuses the bytes (no Host in HTTP/1.1)
    assert _differential(good + b"GET /b HTTP/1.1\r\n\r\n", [_hit(good), _hit(good)]) == ["looser-head"]
    # the app saw another path than h11 reads
    assert _differential(good, [_hit(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")]) == ["mismatch-head"]
    post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    assert _differential(post, [_hit(post, b"abd")]) == ["mismatch-body"]
    assert _differential(post[:-1], [_hit(post, b"abc")]) == ["looser-body"]
    connect = b"CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _differential(connect, [_hit(connect)]) == ["served-connect"]


def _response(status: int, *headers: tuple[str, str]) -> WireResponse:
    return WireResponse(status, "Reason", list(headers))


def _responses(raw: bytes, exchange: Exchange, hits: list[Hit]) -> list[str]:
    verdict = Verdict()
    judge_responses(Case(raw), parse(raw), exchange, hits, verdict)
    return [f.kind for f in verdict.failures]


def test_response_oracle_flags_5xx_hangs_and_connections_kept_open() -> None:
    close = ("Connection", "close")
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answered = [_hit(raw)]
    assert _responses(raw, Exchange([_response(200)], closed=True), answered) == []
    assert _responses(raw, Exchange([_response(500, close)], closed=True), []) == ["status-500"]
    assert _responses(raw, Exchange([_response(501, close)], closed=True), []) == ["status-5xx"]
    connect = b"CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _responses(connect, Exchange([_response(501, close)], closed=True), []) == []
    assert _responses(raw, Exchange([_response(400)], closed=True), []) == ["bad-response"]
    assert _responses(raw, Exchange([_response(200)], timed_out="quiet"), answered) == ["kept-open"]
    assert _responses(raw, Exchange([], timed_out="quiet"), []) == ["hang"]
    assert _responses(raw, Exchange([_response(200)], closed=True), []) == ["bad-response"]


def test_chunking_oracle_flags_a_refusal_the_whole_case_does_not_get() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
    case, close = Case(raw, Chunking("trickle")), ("Connection", "close")
    served = [_hit(raw), _hit(raw)]

    def kinds(pieces: Exchange, pieces_hits: list[Hit], whole: Exchange, whole_hits: list[Hit]) -> list[str]:
        verdict = Verdict()
        judge_chunking(case, pieces, pieces_hits, whole, whole_hits, verdict)
        return [f.kind for f in verdict.failures]

    both = Exchange([_response(200), _response(200)], probe=True)
    assert kinds(both, served, both, served) == []
    refused_second = Exchange([_response(200), _response(400, close)], closed=True)
    assert kinds(refused_second, served[:1], both, served) == ["chunking-differs"]
    assert kinds(both, served, refused_second, served[:1]) == ["chunking-differs"]
    # serving fewer because the server closed early (others waiting) is no difference
    assert kinds(Exchange([_response(200, close)], closed=True), served[:1], both, served) == []
    # nor is another status for the same refusal (a request with two faults)
    other_refusal = Exchange([_response(200), _response(431, close)], closed=True)
    assert kinds(refused_second, served[:1], other_refusal, served[:1]) == []
