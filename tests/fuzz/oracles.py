"""The oracles: what the server did with a case, judged against the rules and against h11.

Each failure gets a short class name, so a long run can count them and keep one reproducer per
class:

- ``hang``: no response and no close within the server's own timeouts plus slack;
- ``kept-open``: every request up to one that asked to close was answered, and the server kept
  the connection open;
- ``bad-response``: a response that does not parse, bytes after a refusal, a refusal without
  ``Connection: close``, or a response count that does not match the requests the app answered;
- ``status-500``: any 500 (the fuzz app never fails, so a 500 is the server's own error);
- ``status-5xx``: another 5xx, or a 501/505 where nothing justifies one (501: CONNECT or a
  transfer coding; 505: an HTTP version other than 1.0/1.1);
- ``served-connect``: a CONNECT request reached the app (a 2xx opens a tunnel for intermediaries);
- ``looser-head``: the app got a request where h11 had none (h11 refused, or needed more bytes);
- ``looser-body``: the app got a whole body where h11 did not;
- ``mismatch-head`` / ``mismatch-body``: the app got a request h11 reads differently;
- ``chunking-differs``: sent in pieces, the case was served otherwise than sent whole;
- ``worker-crash``: a worker pid changed; ``traceback``: a traceback in the server's log;
- ``probe-failed``: a fresh valid request did not get its 200 afterwards.

forkserve refusing what h11 accepts is allowed (stricter); such cases are only counted.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field

from .reference import Reference, expected_environ
from .strategies import Case
from .wire import Exchange

_VERSION = re.compile(rb"HTTP/(?!1\.[01](?![0-9]))[0-9]")
_TRANSFER_ENCODING = re.compile(rb"transfer-encoding", re.IGNORECASE)
JUSTIFIED_5XX = {
    501: lambda data: b"CONNECT" in data or _TRANSFER_ENCODING.search(data) is not None,
    505: lambda data: _VERSION.search(data) is not None,
}


@dataclass(frozen=True)
class Failure:
    """One broken rule: its class and what exactly was seen."""

    kind: str
    detail: str


@dataclass
class Hit:
    """A request as the app saw it: the environ fields; ``answered``: the app got to answer (it
    read what it meant to read); ``body``: all of the body, when the app read all of it."""

    environ: dict[str, str]
    answered: bool = False
    body: bytes | None = None


def parse_hits(text: str) -> list[Hit]:
    """The fuzz app's record lines for one connection, as requests."""
    hits: list[Hit] = []
    for line in text.splitlines():
        entry = json.loads(line)
        if "head" in entry:
            hits.append(Hit(entry["head"]))
        else:
            hits[-1].answered = True
            hits[-1].body = None if entry["body"] is None else base64.b64decode(entry["body"])
    return hits


@dataclass
class Verdict:
    """The judgement of one case. ``stricter``: forkserve served fewer whole requests than h11
    parsed (a refusal, or an early close), which is allowed."""

    failures: list[Failure] = field(default_factory=list)
    stricter: bool = False

    def add(self, kind: str, detail: str) -> None:
        self.failures.append(Failure(kind, detail))


def judge_responses(case: Case, reference: Reference, exchange: Exchange, hits: list[Hit],
                    verdict: Verdict) -> None:
    """The response sequence: well-formed, ending in a close or a probe answer, never a 500."""
    if exchange.timed_out:
        answered = sum(1 for r in exchange.responses if r.status == 200)
        if reference.end == "close" and answered >= len(reference.requests):  # (more: looser-head too)
            verdict.add("kept-open", f"{answered} requests answered, request {len(reference.requests)} "
                                     f"asked to close, the connection stayed open ({exchange.timed_out})")
        else:
            verdict.add("hang", exchange.timed_out)
    if exchange.malformed:
        verdict.add("bad-response", exchange.malformed)
    finals = [r for r in exchange.responses if r.status != 100]
    for index, response in enumerate(finals):
        status = response.status
        if status == 500:
            verdict.add("status-500", f"response {index + 1}: {response}")
        elif status >= 500 and not JUSTIFIED_5XX.get(status, lambda data: False)(case.data):
            verdict.add("status-5xx", f"response {index + 1}: {status} without a reason for it")
        if status >= 400:
            if index != len(finals) - 1:
                verdict.add("bad-response", f"a response after the {status} refusal: {finals[index + 1]}")
            if response.header("Connection") != "close":
                verdict.add("bad-response", f"{status} refusal without Connection: close")
        elif status != 200:
            verdict.add("bad-response", f"unexpected status {status}")
    answered = sum(1 for r in finals if r.status == 200)
    expected = sum(1 for hit in hits if hit.answered)
    if answered != expected and not exchange.timed_out and not exchange.malformed:
        verdict.add("bad-response", f"{answered} 200 responses for {expected} requests the app answered")


def judge_differential(reference: Reference, hits: list[Hit], verdict: Verdict) -> None:
    """What reached the app must be what h11 reads, in order, and no more."""
    for index, hit in enumerate(hits):
        if hit.environ.get("REQUEST_METHOD") == "CONNECT":
            verdict.add("served-connect", f"request {index + 1}: {hit.environ}")
        if index >= len(reference.requests):
            how = f"h11 refused: {reference.error}" if reference.end == "error" else f"h11: {reference.end}"
            verdict.add("looser-head", f"request {index + 1} reached the app, {how}; app saw {hit.environ}")
            return
        parsed = reference.requests[index]
        wanted = expected_environ(parsed)
        if hit.environ != wanted:
            keys = sorted(k for k in wanted.keys() | hit.environ.keys() if wanted.get(k) != hit.environ.get(k))
            differences = {k: (hit.environ.get(k), wanted.get(k)) for k in keys}
            verdict.add("mismatch-head", f"request {index + 1} (app, h11): {differences}")
        if hit.body is None:
            continue
        if not parsed.complete:
            verdict.add("looser-body", f"request {index + 1}: app got body {hit.body!r}, h11: "
                                       f"{reference.end} {reference.error}")
        elif hit.body != parsed.body:
            verdict.add("mismatch-body", f"request {index + 1}: app got {hit.body!r}, h11 {parsed.body!r}")
    verdict.stricter = sum(1 for hit in hits if hit.answered) < len(reference.complete)


def _served_and_refusal(exchange: Exchange, hits: list[Hit]) -> tuple[int, int | None]:
    """How many requests the app answered, and the refusal that ended the connection (None
    when it ended otherwise: a close, an early close while others wait, a timeout's 408)."""
    served = sum(1 for hit in hits if hit.answered)
    last = exchange.responses[-1].status if exchange.responses else 0
    return served, last if last >= 400 and last != 408 else None


def judge_chunking(case: Case, pieces: Exchange, pieces_hits: list[Hit], whole: Exchange,
                   whole_hits: list[Hit], verdict: Verdict) -> None:
    """The same bytes sent in pieces and sent whole must be served alike: a run that served
    fewer requests than the other must not have refused the next one. (A run may serve fewer for
    a benign reason: the server closes a keep-alive connection early when others wait. Two runs
    may refuse a request with different statuses: one with two faults gets the status of the
    fault a check meets first, and an incomplete head is checked in another order.)"""
    if pieces.timed_out or pieces.malformed or whole.timed_out or whole.malformed:
        return  # already a failure of its own
    (served_p, refused_p), (served_w, refused_w) = (_served_and_refusal(pieces, pieces_hits),
                                                    _served_and_refusal(whole, whole_hits))
    fewer_refused = refused_p if served_p < served_w else refused_w if served_w < served_p else None
    if fewer_refused is not None:
        statuses = [r.status for r in pieces.responses], [r.status for r in whole.responses]
        verdict.add("chunking-differs", f"sent {case.chunking.kind}: {statuses[0]}, {served_p} served; "
                                        f"sent whole: {statuses[1]}, {served_w} served")


def judge(case: Case, reference: Reference, exchange: Exchange, hits: list[Hit]) -> Verdict:
    """Every per-connection oracle (the server-wide ones are the runner's: pids, log, probe)."""
    verdict = Verdict()
    judge_responses(case, reference, exchange, hits, verdict)
    judge_differential(reference, hits, verdict)
    return verdict
