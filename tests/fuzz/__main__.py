"""The long run: ``python -m tests.fuzz --cases 100000 [--seed N] [--workers 2] [--jobs K] [--parser P]``.

Starts forkserve (``--workers`` workers) — with ``--parser both`` (the default) two of them, one
per parser (``--http-parser h11`` and ``httptools``), whose cases also go through both parsers in
process (the differential oracle, parsers.py); with ``h11`` or ``httptools`` one server with
that parser — runs the cases in ``--jobs`` client processes, prints progress, then shrinks the
smallest failing case of each class alone against the server it failed on, writes each
reproducer (raw bytes and a description) into a directory it prints, and reports cases run,
failures by class, elapsed time and rate. Exits 1 when anything failed. ``--replay FILE`` plays
one saved reproducer instead, on each server, and prints its verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from .reference import parse
from .runner import Fuzzer, Plan, Tally, run_parallel
from .server import FuzzServer
from .shrink import Budget, shrink
from .strategies import Case, Chunking

VERIFY_TRIES = 3  # plays before a reproducer counts as not failing again (timing may vary)
PARSERS = {"h11": ("h11",), "httptools": ("httptools",), "both": ("h11", "httptools")}


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="cases to run (default 100000)")
    parser.add_argument("--seed", type=int, default=None, help="base seed (default: random, printed)")
    parser.add_argument("--workers", type=int, default=2, help="forkserve workers (default 2)")
    parser.add_argument("--jobs", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--batch", type=int, default=500, help="cases per hypothesis run in a job")
    parser.add_argument("--hold-one-in", type=int, default=200,
                        help="one case in N keeps its side open: the server's timeouts must end it")
    parser.add_argument("--trickle-one-in", type=int, default=10, help="one case in N is trickled")
    parser.add_argument("--probe-every", type=int, default=20,
                        help="a fresh-connection probe after every Nth closed case (and every failure)")
    parser.add_argument("--max-seconds", type=float, default=4 * 3600, help="stop the run after this long")
    parser.add_argument("--shrink-seconds", type=float, default=60, help="shrinking time per failure class")
    parser.add_argument("--out", type=Path, default=None, help="reproducer directory (default: a new temp dir)")
    parser.add_argument("--server-root", type=Path, default=None,
                        help="run the forkserve of this checkout (e.g. an old commit's `git archive`)")
    parser.add_argument("--replay", type=Path, default=None, help="play one reproducer (.bin) and exit")
    parser.add_argument("--parser", choices=PARSERS, default="both",
                        help="the server's --http-parser; 'both' (default): a server per parser, cases "
                             "split between them, and the two parsers compared in process on every case")
    return parser.parse_args(argv)


def _progress(tally: Tally, elapsed: float) -> None:
    failures = ", ".join(f"{kind} {count}" for kind, count in tally.failures.most_common()) or "none"
    rate = tally.cases / elapsed if elapsed else 0.0
    print(f"{elapsed:7.0f} s  {tally.cases:>8} cases  {rate:6.0f}/s  failures: {failures}", flush=True)


def _describe(case: Case, failure: str) -> str:
    """A reproducer's description: how to send it, what failed, and what h11 makes of it."""
    reference = parse(case.data)
    return json.dumps({
        "data": case.data.decode("latin-1"),
        "chunking": dataclasses.asdict(case.chunking),
        "hold": case.hold,
        "failure": failure,
        "h11": f"{len(reference.complete)} complete request(s), then {reference.end} {reference.error}",
        "replay": "python -m tests.fuzz --replay <the .bin file>",
    }, indent=2)


def _shrink_all(fuzzers: dict[str, Fuzzer], tally: Tally, out: Path, seconds: float) -> None:
    """Shrink each class's smallest case alone against the server it failed on (a class named
    ``KIND@PARSER`` came from that parser's server) and write its reproducer."""
    out.mkdir(parents=True, exist_ok=True)
    for kind, (case, detail) in sorted(tally.examples.items()):
        parser = kind.partition("@")[2] or "h11"
        fuzzer = fuzzers.get(parser) or next(iter(fuzzers.values()))

        def failure(candidate: Case, tries: int = 1, kind: str = kind, fuzzer: Fuzzer = fuzzer) -> str | None:
            """The detail of ``kind`` failing in one of ``tries`` plays (timing may vary)."""
            for _ in range(tries):
                found = [f.detail for f in fuzzer.run(candidate).failures if f.kind == kind]
                if found:
                    return found[0]
            return None

        if failure(case, VERIFY_TRIES) is None:
            note = f"did not fail again alone ({detail}); kept unshrunk"
        else:
            case = shrink(case, lambda candidate: failure(candidate) is not None, Budget(400, seconds))
            note = failure(case, VERIFY_TRIES) or f"flaky after shrinking; first seen as: {detail}"
        (out / f"{kind}.bin").write_bytes(case.data)
        (out / f"{kind}.json").write_text(_describe(case, note))
        print(f"  {kind}: {tally.failures[kind]} case(s); reproducer {out / kind}.bin ({len(case.data)} bytes):")
        print(f"    {case.data[:400]!r}")
        print(f"    {note[:400]}")


def _replay(servers: list[FuzzServer], path: Path, differential: bool) -> int:
    """Play one reproducer on each server, sent the way its description says (whole without one)."""
    case = Case(path.read_bytes())
    description = path.with_suffix(".json")
    if description.exists():
        saved = json.loads(description.read_text())
        chunking = saved["chunking"]
        case = Case(case.data, Chunking(chunking["kind"], tuple(chunking["cuts"]), chunking["size"]), saved["hold"])
    failed = 0
    for server in servers:
        fuzzer = Fuzzer(server, differential=differential)
        verdict = fuzzer.run(case)
        fuzzer.close()
        print(f"--http-parser {server.parser}:")
        for failure in verdict.failures:
            print(f"  {failure.kind}: {failure.detail}")
        print("  no failure" if not verdict.failures else f"  {len(verdict.failures)} failure(s)")
        failed += len(verdict.failures)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run the long fuzz run (or a replay); 1 if anything failed."""
    options = _arguments(argv)
    differential = options.parser == "both"
    with tempfile.TemporaryDirectory(prefix="forkserve-fuzz-") as scratch, contextlib.ExitStack() as stack:
        servers = [stack.enter_context(FuzzServer.running(options.workers, Path(scratch) / parser,
                                                          options.server_root, parser))
                   for parser in PARSERS[options.parser]]
        if options.replay is not None:
            return _replay(servers, options.replay, differential)
        seed = options.seed if options.seed is not None else random.randrange(1 << 31)
        plan = Plan(options.cases, seed, options.jobs, options.batch, options.hold_one_in,
                    options.trickle_one_in, options.probe_every, differential)
        where = ", ".join(f"{s.address[0]}:{s.address[1]} (--http-parser {s.parser})" for s in servers)
        print(f"fuzzing forkserve at {where}, {options.workers} workers each: {plan.cases} cases, seed {seed}, "
              f"{plan.jobs} client processes" + (", the parsers compared on every case" if differential else ""),
              flush=True)
        started = time.monotonic()
        tally, trouble = run_parallel(servers, plan, options.max_seconds, _progress)
        elapsed = time.monotonic() - started
        print(f"\ncases run: {tally.cases} in {elapsed:.1f} s ({tally.cases / max(elapsed, 1e-9):.0f} cases/s), "
              f"seed {seed}")
        print(f"stricter than h11 (allowed): {tally.stricter} cases")
        for line in trouble:
            print(f"run trouble: {line}")
        for server in servers:
            if not server.alive():
                print(f"the server (--http-parser {server.parser}) exited during the run")
                tally.failures["server-exit"] += 1
        print("refusals by rule (most common):")
        for rule, count in tally.refusals.most_common(12):
            print(f"  {count:>7}  {rule}")
        if not tally.failures:
            print("failures by class: none")
            return 1 if trouble else 0
        out = options.out or Path(tempfile.mkdtemp(prefix="forkserve-fuzz-findings-"))
        print(f"failures by class (reproducers in {out}):")
        for kind in tally.failures.keys() - tally.examples.keys():
            print(f"  {kind}: {tally.failures[kind]}")
        fuzzers = {server.parser: Fuzzer(server, differential=differential) for server in servers}
        try:
            _shrink_all(fuzzers, tally, out, options.shrink_seconds)
        finally:
            for fuzzer in fuzzers.values():
                fuzzer.close()
        return 1


if __name__ == "__main__":
    sys.exit(main())
