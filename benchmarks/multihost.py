"""The multi-host scenarios, longer: three forkserve hosts behind HAProxy and nginx.

    sudo python -m benchmarks.multihost                      # ~2 min
    sudo python -m benchmarks.multihost --output benchmarks/MULTIHOST.md

The same fleet and scenarios as tests/test_multihost.py (they live in tests/fleet.py; the test
suite runs the short version), with more of everything: more clients per front end, more
requests before, between and after each event, 2 workers per host, the production-like
shutdown_delay, every host killed and every host's link cut in turn (each cut held for a few
seconds), and the rolling upgrade repeated. Needs root, `ip`, haproxy, nginx and openssl.
Figures are counted at the client; "out after" is how long after the event the front end
stopped sending to the host (HAProxy: its health check marked the host DOWN; nginx: its first
failed connection to the host took it out for fail_timeout).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))  # the fleet lives with the test that runs it in the default suite

from fleet import (
    Scenario,
    running_site,
    scenario_cut_link,
    scenario_kill_master,
    scenario_rolling_upgrade,
)
from nginx import make_tls_files


def table(results: list[Scenario]) -> list[str]:
    """One row per scenario and front end."""
    rows = ["| scenario | host | front end | sent | ok | failed | failures | front end stopped sending |",
            "|---|---|---|---|---|---|---|---|"]
    for result in results:
        notes = result.notes()
        for front_end, tally in result.tallies.items():
            failures = ", ".join(f"{count} {kind}" for kind, count in tally.failures.items()) or "—"
            if tally.failed and result.victim is not None:
                untraced = result.untraced_failures(front_end)
                failures += (f" ({'all' if not untraced else 'NOT all'} in flight on {result.victim.name}"
                             f"{': ' + '; '.join(untraced) if untraced else ''})")
            host = result.victim.name if result.victim else "all, in turn"
            rows.append(f"| {result.name} | {host} | {front_end} | {tally.sent:,} | {tally.ok:,} | {tally.failed} "
                        f"| {failures} | {notes[front_end]} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multihost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="client threads per front end (4)")
    parser.add_argument("--workers", type=int, default=2, help="forkserve workers per host (2)")
    parser.add_argument("--shutdown-delay", type=float, default=5.0, help="forkserve's shutdown_delay (5)")
    parser.add_argument("--settle", type=int, default=500,
                        help="requests per front end before, between and after the events (500)")
    parser.add_argument("--upgrades", type=int, default=2, help="rolling upgrades of the whole fleet (2)")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds a cut link stays cut once noticed (3)")
    parser.add_argument("--output", type=Path, help="also write the report here")
    options = parser.parse_args(argv)
    missing = [name for name in ("ip", "haproxy", "nginx", "openssl")
               if not (shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin"))]
    if os.geteuid() != 0 or missing:
        print(f"needs root and {', '.join(missing) or 'nothing else'}: network namespaces, HAProxy, nginx",
              file=sys.stderr)
        return 2
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    began = time.monotonic()
    results: list[Scenario] = []
    with tempfile.TemporaryDirectory(prefix="fsv-multihost-") as workdir:
        work = Path(workdir)
        tls = make_tls_files(work)
        (work / "fleet").mkdir()
        (work / "nginx").mkdir()
        with running_site(work / "fleet", work / "nginx", tls, haproxy, options.shutdown_delay,
                          options.workers) as site:
            for _ in range(options.upgrades):
                print("rolling upgrade", file=sys.stderr, flush=True)
                results.append(scenario_rolling_upgrade(site, options.clients, options.settle))
            for host in site.fleet.hosts:
                print(f"SIGKILL {host.name}'s master", file=sys.stderr, flush=True)
                results.append(scenario_kill_master(site, host, options.clients, options.settle))
            for host in site.fleet.hosts:
                print(f"cut {host.name}'s link", file=sys.stderr, flush=True)
                results.append(scenario_cut_link(site, host, options.clients, options.settle, options.hold))
    load = os.getloadavg()
    command = "python -m benchmarks.multihost " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# forkserve behind HAProxy and nginx: three hosts, rolling upgrades and failures",
        "",
        f"- command: `{command.strip()}`; took {time.monotonic() - began:.0f} s",
        (f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {os.cpu_count()} CPUs, "
        f"Linux {platform.release()}; load average after: {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}"),
        (f"- fleet: 3 network namespaces, forkserve `-c conf/forkserve.fleet.conf.py -w {options.workers} "
        f"--shutdown-delay {options.shutdown_delay:g}`; HAProxy conf/haproxy.cfg (checks every 200 ms, "
        "fall 2 rise 2); nginx conf/nginx.conf (forkserve_hosts)"),
        (f"- load: {options.clients} client threads per front end, keep-alive, alternating GET /json and "
        f"POST /upload (4 KiB, size and SHA-256 checked); {options.settle} requests per front end before, "
        "between and after each event"),
        "",
        *table(results),
        "",
    ]
    text = "\n".join(lines)
    sys.stdout.write(text)
    if options.output:
        options.output.write_text(text)
    return 0 if all(result.output.endswith("exit 0") for result in results if result.victim is None) else 1


if __name__ == "__main__":
    sys.exit(main())
