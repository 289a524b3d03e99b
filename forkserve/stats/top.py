"""``forkserve top``: a live terminal view of a running server, read from its stats endpoint.

One line per worker (pid, state — with app threads, how many of them are busy —, requests served,
memory, age, why the worker it replaced was restarted, its connections, the worst queue time of
its recent requests, and the request it is serving with how long it has been at it; with app
threads, each busy thread's request), the totals by status class and requests shed, the workers'
and threads' states, restarts by reason, the listen queue depth and, with ``max_workers``, the
adaptive fleet's bounds and last change — refreshed every second; ``q`` quits. It only reads ``GET /stats`` from the address
given to the server as ``stats_bind``, so it works for any server the operator can reach.
Plain curses from the standard library; ``--once`` prints one frame as text (for scripts).
"""

from __future__ import annotations

import argparse
import curses
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from forkserve.process.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from forkserve.process.sockets import BindError, parse_bind

DEFAULT_ADDRESS = "127.0.0.1:9191"
FETCH_TIMEOUT = 2.0
MAX_REPLY = 8 * 1024 * 1024
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")


class StatsUnavailable(Exception):
    """The stats endpoint could not be read; the message says why, in one line."""


def get(address: str, path: str, timeout: float = FETCH_TIMEOUT) -> tuple[int, bytes]:
    """GET one path from a stats endpoint (HOST:PORT or unix:PATH): (status, body)."""
    try:
        kind, target, port = parse_bind(address)
    except BindError:
        raise StatsUnavailable(f"'{address}' is not an address (HOST:PORT or unix:PATH)") from None
    if kind == "fd":
        raise StatsUnavailable(f"cannot connect to '{address}': give HOST:PORT or unix:PATH")
    try:
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(str(target))
        else:
            sock = socket.create_connection((str(target), port), timeout=timeout)
        with sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: forkserve\r\n\r\n".encode())
            reply = _read_all(sock)
    except OSError as error:
        raise StatsUnavailable(f"cannot read {address}: {error.strerror or error}") from None
    head, _, body = reply.partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise StatsUnavailable(f"{address} did not answer HTTP")
    return int(parts[1]), body


def fetch_stats(address: str, timeout: float = FETCH_TIMEOUT) -> dict[str, Any]:
    """GET /stats from a stats endpoint and decode it."""
    status, body = get(address, "/stats", timeout)
    if status != 200:
        raise StatsUnavailable(f"{address} answered {status} to /stats")
    try:
        return json.loads(body)
    except ValueError:
        raise StatsUnavailable(f"{address} did not send JSON stats") from None


def _read_all(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_REPLY:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "K", "M", "G"):
        if amount < 1024 or unit == "G":
            return f"{amount:.0f}{unit}" if unit == "B" else f"{amount:.1f}{unit}"
        amount /= 1024
    return f"{amount:.1f}G"


def human_queue(value: float | None) -> str:
    """A queue time: milliseconds below a second, '-' for none."""
    if not value:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def human_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


WORKER_HEADER = (
    f"{'PID':>8} {'STATE':<9}{'REQS':>9} {'RSS':>8} {'AGE':>8} {'REPLACED':<13}{'CONN r/i/a/f':>15}"
    f"{'QUEUE':>7}{'REQ AGE':>8}  CURRENT REQUEST"
)


def _connections(counts: dict[str, int]) -> str:
    """A worker's connections as reading/idle/app/flushing."""
    return "/".join(str(counts.get(name, 0)) for name in ("reading", "idle", "app", "flushing"))


def render_frame(stats: dict[str, Any] | None, address: str, problem: str | None = None) -> list[str]:
    """The lines of one screen (plain text; the caller clips them to the terminal)."""
    title = f"forkserve top  {address}  {time.strftime('%H:%M:%S')}"
    if stats is None:
        return [title, "", f"no stats: {problem or 'not read yet'}", "", "retrying every second; q quits"]
    totals = stats.get("totals", {})
    classes = totals.get("by_status_class", {})
    states = stats.get("workers_by_state", {})
    readiness = "ready" if stats.get("ready") else f"NOT READY ({stats.get('ready_reason', '?')})"
    lines = [
        f"{title}  master {stats.get('master_pid')}  up {human_seconds(stats.get('uptime'))}  {readiness}",
        f"workers {states.get('idle', 0) + states.get('busy', 0)}/{stats.get('target_workers')}  "
        + "  ".join(f"{name} {count}" for name, count in states.items())
        + "   threads " + "  ".join(f"{name} {count}" for name, count in stats.get("threads_by_state", {}).items()),
        f"requests {totals.get('requests', 0)}  "
        + "  ".join(f"{name} {classes.get(name, 0)}" for name in STATUS_CLASSES)
        + f"  sent {human_bytes(totals.get('bytes_out'))}  shed {totals.get('shed', 0)}",
        "restarts " + ("  ".join(f"{reason} {count}" for reason, count in stats.get("restarts", {}).items()
                                 if count) or "none"),
        "connections " + "  ".join(f"{name} {count}" for name, count in stats.get("connections_by_state", {}).items()),
    ]
    worst = max((worker.get("queue_time_worst") or 0.0 for worker in stats.get("workers", [])), default=0.0)
    lines.append(f"queue time, worst of the last 5-10 s: {human_queue(worst)}")
    adaptive = stats.get("adaptive")
    if adaptive:
        changes = adaptive.get("changes", {})
        last = adaptive.get("last_change")
        when = stats.get("time", time.time()) - (adaptive.get("last_change_at") or 0)
        lines.append(f"adaptive workers {adaptive.get('min_workers')}..{adaptive.get('max_workers')}: "
                     f"target {stats.get('target_workers')}, up {changes.get('up', 0)} down {changes.get('down', 0)}"
                     + (f"; last {human_seconds(max(0.0, when))} ago: {last}" if last else ""))
    for listener in stats.get("listeners", []):
        depth, limit = listener.get("queue_depth"), listener.get("queue_limit")
        queue = "unknown" if depth is None else f"{depth} waiting (limit {limit})"
        lines.append(f"listen queue {listener.get('address')}: {queue}")
    lines += ["", WORKER_HEADER]
    for worker in stats.get("workers", []):
        threads = worker.get("threads") or []
        current = worker.get("current_request") or ""
        state = worker.get("state", "?")
        if threads and state in ("idle", "busy"):
            state = f"{sum(thread.get('state') == 'busy' for thread in threads)}/{len(threads)} busy"
        lines.append(
            f"{worker.get('pid'):>8} {state:<9}{worker.get('requests', 0):>9} "
            f"{human_bytes(worker.get('rss_bytes')):>8} {human_seconds(worker.get('age')):>8} "
            f"{worker.get('last_restart_reason') or '-':<13}"
            f"{_connections(worker.get('connections', {})):>15}"
            f"{human_queue(worker.get('queue_time_worst')):>7}"
            f"{human_seconds(worker.get('request_age')) if current else '':>8}  {current}"
        )
        for thread in threads:
            if thread.get("current_request"):
                lines.append(f"{'':>8} thread {thread.get('thread')}: {human_seconds(thread.get('request_age'))}  "
                             f"{thread.get('current_request')}")
    lines += ["", "q quits; refresh every second"]
    return lines


def _poll(address: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return fetch_stats(address), None
    except StatsUnavailable as error:
        return None, str(error)


def _draw(screen: Any, lines: list[str]) -> None:
    height, width = screen.getmaxyx()
    screen.erase()
    for row, line in enumerate(lines[:height]):
        attribute = curses.A_REVERSE if line == WORKER_HEADER else curses.A_NORMAL
        try:
            screen.addnstr(row, 0, line, max(1, width - 1), attribute)
        except curses.error:
            pass  # the terminal is smaller than the frame
    screen.refresh()


def _loop(screen: Any, address: str, interval: float) -> None:
    try:
        curses.curs_set(0)
    except curses.error:
        pass
    screen.timeout(int(interval * 1000))
    while True:
        stats, problem = _poll(address)
        _draw(screen, render_frame(stats, address, problem))
        key = screen.getch()
        if key in (ord("q"), ord("Q")):
            return


def main(argv: Sequence[str]) -> int:
    """``forkserve top [--stats ADDRESS] [--once]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="forkserve top",
        description="Live view of a forkserve server, read from its stats endpoint (stats_bind).",
    )
    parser.add_argument("--stats", metavar="ADDRESS",
                        default=os.environ.get("FORKSERVE_STATS", DEFAULT_ADDRESS),
                        help="the server's stats_bind: HOST:PORT or unix:PATH "
                             f"(default: $FORKSERVE_STATS or {DEFAULT_ADDRESS})")
    parser.add_argument("--once", action="store_true", help="print one frame as text and exit")
    parser.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                        help="seconds between refreshes (default: 1)")
    args = parser.parse_args(list(argv))
    if args.interval <= 0:
        parser.error("--interval must be positive")
    if args.once:
        stats, problem = _poll(args.stats)
        print("\n".join(render_frame(stats, args.stats, problem)))
        return EXIT_OK if stats is not None else EXIT_FAILURE
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("forkserve top: error: needs a terminal; use --once for a single text frame", file=sys.stderr)
        return EXIT_USAGE
    try:
        curses.wrapper(_loop, args.stats, args.interval)
    except KeyboardInterrupt:
        pass
    return EXIT_OK
