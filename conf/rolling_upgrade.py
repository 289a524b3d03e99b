#!/usr/bin/env python3
"""Upgrade the forkserve hosts behind a load balancer one at a time, losing no request.

    python3 conf/rolling_upgrade.py --restart 'ssh {host} sudo systemctl restart forkserve' \\
        10.0.0.11 10.0.0.12 10.0.0.13

The recommended procedure (README "Several hosts"), as a script; tests/test_multihost.py runs
this very file against three hosts behind HAProxy and behind nginx, under load. Each host runs
forkserve with `shutdown_delay` and `stats_bind` (conf/forkserve.fleet.conf.py). For each host
in turn:

1. Every host is ready (its /readyz answers 200): a host is never taken out while another is.
2. The restart command runs, with {host} replaced; it returns once the old forkserve has stopped
   and the new one has started (`systemctl restart` with the shipped unit does). Deploy the new
   code in the same command (`... 'cd /srv/app && git pull && sudo systemctl restart forkserve'`).
   What the restart does, and why nothing is lost:
   - TERM: /readyz turns 503 at once and the workers go on serving for `shutdown_delay`; the load
     balancer's health check sees it and stops sending new requests (HAProxy, Kubernetes);
   - once the delay is over, the exact drain: every connection already accepted is served, new
     SYNs are dropped (a front end without health checks, such as nginx, times out on them and
     moves on to the next host), and the master exits;
   - the new forkserve starts; /readyz answers 200 once all its workers have booted.
3. The new master (another pid) answers /readyz with 200.
4. The new master has served requests: the load balancer has put the host back in rotation
   (HAProxy after `rise` checks, nginx once the host's fail_timeout is over). A site without
   traffic never shows that: pass --settle SECONDS to wait that long instead.

Stops at the first host that fails a step (exit 1), leaving the others untouched. Standard
library only: runs wherever Python 3 does, with no forkserve installed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

POLL = 0.05


class UpgradeError(Exception):
    """A step did not complete in time; the message says which host and what it last saw."""


def stats(host: str, port: int, timeout: float = 2.0) -> dict[str, Any] | None:
    """The host's /stats document (master pid, readiness, request totals), or None when the
    stats endpoint does not answer (stopped, restarting, unreachable)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/stats", timeout=timeout) as reply:
            return json.load(reply)
    except (OSError, ValueError):
        return None


def ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when the host's /readyz answers 200 (503 while draining or stopping)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=timeout) as reply:
            return reply.status == 200
    except OSError:  # a 503 (urllib's HTTPError) as much as no answer at all
        return False


def wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; UpgradeError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise UpgradeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} rolling upgrade: {message}", file=sys.stderr, flush=True)


def upgrade_host(host: str, hosts: list[str], restart: str, port: int, timeout: float,
                 settle: float | None) -> None:
    """Steps 1 to 4 for one host (see the module docstring)."""
    for other in hosts:
        wait(lambda other=other: ready(other, port), timeout, f"{other} to be ready before {host} goes out")
    before = wait(lambda: stats(host, port), timeout, f"{host}'s stats endpoint")
    old_pid = before["master_pid"]
    command = restart.replace("{host}", shlex.quote(host))
    log(f"{host}: restarting (master {old_pid}): {command}")
    started = time.monotonic()
    completed = subprocess.run(command, shell=True, timeout=timeout, check=False)
    if completed.returncode != 0:
        raise UpgradeError(f"{host}: the restart command exited with {completed.returncode}")

    def new_master_ready() -> dict[str, Any] | None:
        now = stats(host, port)
        return now if now and now["master_pid"] != old_pid and now["ready"] else None

    new = wait(new_master_ready, timeout, f"{host}'s new master to be ready")
    log(f"{host}: new master {new['master_pid']} ready after {time.monotonic() - started:.1f}s")
    if settle is not None:
        time.sleep(settle)
        return

    def serving() -> bool:
        now = stats(host, port)
        return bool(now and now["master_pid"] == new["master_pid"] and now["totals"]["requests"] > 0)

    wait(serving, timeout, f"the load balancer to send requests to {host} again")
    log(f"{host}: back in rotation")


def main(argv: list[str] | None = None) -> int:
    """Upgrade every host given, in order; 0 when all are done, 1 at the first failure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hosts", nargs="+", metavar="HOST", help="each host's address, as its stats_bind is reached")
    parser.add_argument("--restart", required=True,
                        help="shell command restarting forkserve on {host}, returning once it has restarted")
    parser.add_argument("--stats-port", type=int, default=9191, help="the port of stats_bind on the hosts (9191)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds each step may take (120; the restart includes shutdown_delay)")
    parser.add_argument("--settle", type=float, default=None, metavar="SECONDS",
                        help="wait this long after a host is ready instead of waiting to see it serve "
                             "(for a site without traffic)")
    options = parser.parse_args(argv)
    try:
        for host in options.hosts:
            upgrade_host(host, options.hosts, options.restart, options.stats_port, options.timeout,
                         options.settle)
    except UpgradeError as error:
        log(f"stopped: {error}")
        return 1
    log(f"done: {len(options.hosts)} host(s) upgraded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
