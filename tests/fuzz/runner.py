"""Running cases: one client's loop against the server, and the tally a long run adds up.

``Fuzzer.run`` plays one case and applies every oracle: the per-connection ones (oracles.judge)
and the server-wide ones, which only a client that watches the server can check: worker pids
unchanged, no traceback in the log, a fresh request still served; and, with ``differential``, the
in-process comparison of the two parsers (parsers.py). A connection the server keeps open (its
probe answered) is reused for the next case: no connect and accept per case. Failures on a server
that runs another parser than the default are classed apart: ``mismatch-head@httptools``.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import re
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from .oracles import Failure, Hit, Verdict, judge, judge_chunking, parse_hits
from .parsers import compare
from .reference import Reference, parse
from .server import BODY_TIMEOUT, HEADER_TIMEOUT, FuzzServer
from .strategies import Case, Chunking, cases
from .wire import Exchange, connect, fresh_probe, play

# How long any one read may wait: the server's longest own timeout (header, then body) plus slack
# for a loaded 2-core machine. Below the keep-alive timeout, so a connection kept open shows.
WAIT = HEADER_TIMEOUT + BODY_TIMEOUT + 1.0
PROGRESS_EVERY = 5.0
_REFUSED = re.compile(r"refused request from 127\.0\.0\.1:(\d+): (\d+) (.*)")
_DETAIL = re.compile(r"b'.*|b\".*|[0-9]+")


def refusal_kind(status: str, reason: str) -> str:
    """A refusal's log reason without the request's own bytes, to count refusals by rule."""
    return f"{status} {_DETAIL.sub('N', reason.split(': ', 1)[0])[:60]}"


class Fuzzer:
    """One client: plays cases on a server and judges them. Not thread-safe; one per process."""

    def __init__(self, server: FuzzServer, probe_every: int = 1, differential: bool = False) -> None:
        self.server = server
        self.probe_every = probe_every
        self.differential = differential
        self.sock: socket.socket | None = None
        self.cases = 0
        self.pids = server.worker_pids()
        self.log = open(server.log_path, encoding="utf-8", errors="replace")  # noqa: SIM115 -- closed in close()
        self.log.seek(0, 2)
        self.refusals: Counter[str] = Counter()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.log.close()

    def _socket(self) -> tuple[socket.socket, int]:
        if self.sock is None:
            self.sock = connect(self.server.address, WAIT)
            self.server.take_hits(self.sock.getsockname()[1])  # a stale record of an old owner
        return self.sock, self.sock.getsockname()[1]

    def run(self, case: Case) -> Verdict:
        """Play ``case`` and apply every oracle. A case sent in pieces that the server refused
        (or that it refused sent whole) is played again whole: how the bytes arrive must not
        change what is served."""
        reference = parse(case.data)
        played = self._play(case, reference)
        if isinstance(played, str):
            verdict = Verdict()
            verdict.add("probe-failed", played)
            return verdict
        exchange, hits, port = played
        verdict = judge(case, reference, exchange, hits)
        if case.chunking.kind != "whole" and not case.hold:
            whole = self._play(replace(case, chunking=Chunking()), reference)
            if not isinstance(whole, str):
                judge_chunking(case, exchange, hits, whole[0], whole[1], verdict)
        self.cases += 1
        self._check_server(verdict, port, force_probe=not exchange.probe)
        if self.server.parser != "h11":
            verdict.failures = [Failure(f"{f.kind}@{self.server.parser}", f.detail) for f in verdict.failures]
        if self.differential:
            difference = compare(case.chunking.pieces(case.data))
            if difference:
                verdict.add("parsers-differ", difference)
        return verdict

    def _play(self, case: Case, reference: Reference) -> tuple[Exchange, list[Hit], int] | str:
        """Send ``case`` and collect the responses and the app's records, or say why it could
        not be sent. How the client ends the case follows h11's reading (see wire.py)."""
        if reference.end == "open":
            then = "probe"
        elif reference.end == "close" or case.hold:
            then = "wait"
        else:
            then = "half-close"
        try:
            sock, port = self._socket()
        except OSError as error:
            return f"cannot connect: {error!r}"
        exchange = play(sock, case, then, WAIT)
        if not exchange.probe:
            sock.close()
            self.sock = None
        return exchange, parse_hits(self.server.take_hits(port)), port

    def _check_server(self, verdict: Verdict, port: int, force_probe: bool) -> None:
        pids = self.server.worker_pids()
        if pids != self.pids:
            verdict.add("worker-crash", f"worker pids {sorted(self.pids)} -> {sorted(pids)}")
            self.pids = pids
        log = self.log.read()
        if "Traceback" in log:
            verdict.add("traceback", log[max(log.index("Traceback") - 300, 0):][:2000])
        for match in _REFUSED.finditer(log):
            if int(match.group(1)) == port:
                self.refusals[refusal_kind(match.group(2), match.group(3))] += 1
        if force_probe and self.cases % self.probe_every == 0 or verdict.failures:
            problem = fresh_probe(self.server.address, WAIT)
            if problem:
                verdict.add("probe-failed", problem)


@dataclass
class Tally:
    """What a run found: counts by class and the smallest failing case of each class."""

    cases: int = 0
    stricter: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    examples: dict[str, tuple[Case, str]] = field(default_factory=dict)
    refusals: Counter[str] = field(default_factory=Counter)

    def record(self, case: Case, verdict: Verdict) -> None:
        self.cases += 1
        self.stricter += verdict.stricter
        for kind in {failure.kind for failure in verdict.failures}:
            self.failures[kind] += 1
            self._keep_smallest(kind, case, next(f.detail for f in verdict.failures if f.kind == kind))

    def merge(self, other: Tally) -> None:
        self.cases += other.cases
        self.stricter += other.stricter
        self.failures.update(other.failures)
        self.refusals.update(other.refusals)
        for kind, (case, detail) in other.examples.items():
            self._keep_smallest(kind, case, detail)

    def _keep_smallest(self, kind: str, case: Case, detail: str) -> None:
        known = self.examples.get(kind)
        if known is None or len(case.data) < len(known[0].data):
            self.examples[kind] = (case, detail)


def explore(fuzzer: Fuzzer, strategy: st.SearchStrategy[Case], seed: int, count: int, tally: Tally) -> None:
    """Run ``count`` hypothesis-generated cases (generation only: a long run collects failures
    and shrinks them afterwards by its own means, see shrink.py) into ``tally``."""

    @hypothesis_seed(seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(case: Case) -> None:
        tally.record(case, fuzzer.run(case))

    one()
    tally.refusals.update(fuzzer.refusals)
    fuzzer.refusals.clear()


@dataclass(frozen=True)
class Plan:
    """What a long run's client processes do: ``cases`` in all, shared by ``jobs`` processes, in
    hypothesis runs of ``batch`` cases (each with its own seed: one endless run would keep every
    case it tried in memory)."""

    cases: int
    seed: int
    jobs: int = 2
    batch: int = 500
    hold_one_in: int = 200
    trickle_one_in: int = 10
    probe_every: int = 20
    differential: bool = False  # also compare the two parsers in process, every case


def _job(servers: list[FuzzServer], plan: Plan, index: int, queue: multiprocessing.Queue) -> None:
    """One client process: its share of the cases, a tally per batch onto ``queue``, then None.
    With several servers (one per parser), the batches take turns, and the jobs start on
    different servers."""
    fuzzers = [Fuzzer(server, plan.probe_every, plan.differential) for server in servers]
    strategy = cases(plan.hold_one_in, plan.trickle_one_in)
    share = plan.cases // plan.jobs + (index < plan.cases % plan.jobs)
    done = batch = 0
    try:
        while done < share:
            tally = Tally()
            seed = plan.seed * 1_000_000 + index * 10_000 + batch
            explore(fuzzers[(index + batch) % len(fuzzers)], strategy, seed, min(plan.batch, share - done), tally)
            queue.put((index, tally))
            if not tally.cases:
                break
            done += tally.cases
            batch += 1
    finally:
        for fuzzer in fuzzers:
            fuzzer.close()
        queue.put((index, None))


def run_parallel(servers: list[FuzzServer], plan: Plan, seconds: float,
                 progress: Callable[[Tally, float], None]) -> tuple[Tally, list[str]]:
    """Run ``plan`` in ``plan.jobs`` client processes against ``servers``, for at most ``seconds``.

    Returns the merged tally and any trouble with the jobs themselves (one that died, or the
    deadline). ``progress(tally, elapsed)`` is called every few seconds.
    """
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue = context.Queue()
    jobs = [context.Process(target=_job, args=(servers, plan, index, queue), daemon=True)
            for index in range(plan.jobs)]
    for job in jobs:
        job.start()
    total, trouble = Tally(), []
    started = time.monotonic()
    running = set(range(plan.jobs))
    try:
        while running:
            left = started + seconds - time.monotonic()
            if left <= 0:
                trouble.append(f"stopped at the {seconds:.0f} s deadline")
                break
            try:
                index, part = queue.get(timeout=min(left, PROGRESS_EVERY))
            except queue_module.Empty:
                for index in list(running):
                    if jobs[index].exitcode is not None:
                        trouble.append(f"job {index} exited with {jobs[index].exitcode} before it finished")
                        running.discard(index)
                progress(total, time.monotonic() - started)
                continue
            if part is None:
                running.discard(index)
            else:
                total.merge(part)
                progress(total, time.monotonic() - started)
    finally:
        for job in jobs:
            job.join(timeout=WAIT + 1)
            if job.is_alive():
                job.kill()
                job.join(timeout=5)
    return total, trouble
