"""``python -m benchmarks.profile_worker``: where a forkserve worker's time goes, per request.

Starts forkserve with ``benchmarks/profile_hooks.py`` as its config file (cProfile in every
worker, dumped at exit), drives it with wrk exactly as the side-by-side runner does, stops it,
merges the workers' profiles and prints two tables in microseconds per request: the functions
with the most own time, and forkserve's own functions by inclusive time (the pipeline stages).

cProfile's overhead inflates small Python calls (a function call costs roughly a microsecond
more under it), so read the figures as *shares* of the work, and take absolute CPU per request
from the runner's unprofiled "CPU µs/req" column. Times are wall-clock: functions that wait
(poll, epoll, recv on an idle socket) include time the worker spent waiting for the client.
"""

from __future__ import annotations

import argparse
import json
import pstats
import sys
import tempfile
from pathlib import Path

from benchmarks.scenarios import HELLO_APP
from benchmarks.servers import FORKSERVE, ServerError, ServerSet, ServerSpec
from benchmarks.wrk import WrkError, find_wrk, run_wrk

HOOKS = Path(__file__).resolve().parent / "profile_hooks.py"
PROFILED_FORKSERVE = ServerSpec(FORKSERVE, ("--config", str(HOOKS)))

FunctionKey = tuple[str, int, str]


def _label(key: FunctionKey) -> str:
    filename, line, name = key
    if filename == "~":
        return name  # a builtin, e.g. <method 'recv' of '_socket.socket' objects>
    parts = Path(filename).parts
    for anchor in ("forkserve", "h11", "benchmarks", "demo"):
        if anchor in parts:
            index = len(parts) - 1 - parts[::-1].index(anchor)
            return f"{'/'.join(parts[index:])}:{line}({name})"
    return f"{Path(filename).name}:{line}({name})"


def _table(rows: list[tuple[FunctionKey, tuple]], requests: int, title: str) -> list[str]:
    lines = [f"## {title}", "", "| function | calls/req | own µs/req | incl. µs/req |", "|---|---|---|---|"]
    for key, (_, calls, own, inclusive, _) in rows:
        lines.append(f"| `{_label(key)}` | {calls / requests:.2f} | {own * 1e6 / requests:.2f} | "
                     f"{inclusive * 1e6 / requests:.2f} |")
    return lines


def report(profile_dir: Path, top: int) -> str:
    """The Markdown tables from every worker profile in ``profile_dir``."""
    profiles = sorted(profile_dir.glob("worker-*.prof"))
    if not profiles:
        raise RuntimeError(f"no worker profiles were written to {profile_dir}")
    requests = sum(json.loads(path.with_suffix(".json").read_text())["requests"] for path in profiles)
    if not requests:
        raise RuntimeError("the workers served no requests while profiled")
    stats = pstats.Stats(*map(str, profiles)).stats  # type: ignore[attr-defined]
    by_own = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    ours = [item for item in stats.items() if "/forkserve/" in item[0][0]]
    by_inclusive = sorted(ours, key=lambda item: item[1][3], reverse=True)[:top]
    lines = [f"Profiled {requests} requests over {len(profiles)} worker(s).", ""]
    lines += _table(by_own, requests, f"Top {top} by own time")
    lines += [""] + _table(by_inclusive, requests, f"forkserve functions by inclusive time (top {top})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_worker", description=__doc__.split("\n")[0])
    p.add_argument("--app", default=HELLO_APP, help=f"WSGI app to serve (default {HELLO_APP})")
    p.add_argument("--path", default="/", help="request path (default /)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--connections", type=int, default=2, help="wrk -c (default 2: one per worker)")
    p.add_argument("--duration", type=int, default=10, help="seconds of load (default 10)")
    p.add_argument("--close", action="store_true", help="send Connection: close on every request")
    p.add_argument("--top", type=int, default=25, help="rows per table (default 25)")
    options = p.parse_args(argv)
    try:
        wrk = find_wrk()
    except WrkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="forkserve-profile-") as workdir:
        profile_dir = Path(workdir) / "profiles"
        profile_dir.mkdir()
        env = {"FORKSERVE_PROFILE_DIR": str(profile_dir)}
        try:
            with ServerSet(options.app, options.workers, Path(workdir), (PROFILED_FORKSERVE,), env) as servers:
                result = run_wrk(wrk, servers[0].url + options.path, options.connections, options.duration,
                                 "5s", ("close",) if options.close else ())
        except (ServerError, WrkError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"Under the profiler: {result.requests_per_second:.0f} req/s, "
              f"{result.error_count} errors (wrk -t1 -c{options.connections} -d{options.duration}s).\n")
        try:
            print(report(profile_dir, options.top))
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
