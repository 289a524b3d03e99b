"""Three forkserve hosts behind a real HAProxy and a real nginx, under load: a rolling upgrade
loses no request; a master killed with SIGKILL or a cut link costs at most the requests that
host had in flight, and the front end stops sending to it within its check interval.

The hosts are network namespaces on a bridge (tests/fleet.py), each running forkserve from
conf/forkserve.fleet.conf.py with 1 worker and a short shutdown_delay; HAProxy runs
conf/haproxy.cfg (health checks every 200 ms) and nginx conf/nginx.conf's forkserve_hosts
upstream. Both front ends carry their own client load at the same time and live through the same
events, so each scenario runs once for both. The rolling upgrade is conf/rolling_upgrade.py
itself. Needs root and `ip netns` (skipped otherwise, failed under CI=true); the long version is
``python -m benchmarks.multihost``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import free_port
from fleet import (
    APP_PORT,
    FLEET_CONF,
    STATS_PORT,
    Fleet,
    HAProxy,
    Host,
    Load,
    Routed,
    StateWatch,
    Tally,
    nginx_routed,
    poll,
    rolling_upgrade,
    run,
)
from nginx import Nginx
from system_programs import require_network_namespaces, require_program

from forkserve.settings.resolve import resolve

CHECK_INTER = 0.2        # HAProxy's inter, in the test (1s in production)
FALL = 2                 # conf/haproxy.cfg
CHECK_TIMEOUT = 1.0      # conf/haproxy.cfg's `timeout check`
SHUTDOWN_DELAY = 2.0     # longer than HAProxy's FALL x CHECK_INTER and nginx's fail_timeout (2s)
CLIENT_THREADS = 2       # per front end
SLACK = 1.0              # for a loaded 2-core machine, on top of every detection bound


@dataclass
class Site:
    """The fleet and its two front ends, shared by the scenarios in this file (in order)."""

    fleet: Fleet
    haproxy: HAProxy
    nginx: Nginx


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tls_files) -> Iterator[Site]:
    require_network_namespaces()
    haproxy_binary = require_program("haproxy", "the front end of the multi-host test")
    state = tmp_path_factory.mktemp("fleet")
    fleet = Fleet(state)
    haproxy = nginx = None
    try:
        fleet.create()
        fleet.start(["-w", "1", "--shutdown-delay", str(SHUTDOWN_DELAY)])
        haproxy = HAProxy(state, fleet, f"{int(CHECK_INTER * 1000)}ms", free_port(), free_port()).start(haproxy_binary)
        nginx = Nginx(tmp_path_factory.mktemp("nginx"), [(h.address, APP_PORT) for h in fleet.hosts], tls_files)
        nginx.start()
        yield Site(fleet, haproxy, nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        if haproxy is not None:
            haproxy.stop()
        fleet.destroy()
    assert not fleet.leftovers(), fleet.leftovers()


def test_the_fleet_config_listens_where_the_front_ends_look():
    config = resolve(["-c", str(FLEET_CONF)], {})
    assert config.bind == [f"0.0.0.0:{APP_PORT}"] and config.stats_bind == f"0.0.0.0:{STATS_PORT}"
    # HAProxy's production timing (conf/haproxy.cfg: inter 1s, fall 2, timeout check 1s) and
    # nginx's fail_timeout (2s) both fit in the shipped shutdown_delay.
    assert config.shutdown_delay > FALL * 1.0 + CHECK_TIMEOUT
    assert config.shutdown_delay >= 2.0


def report(scenario: str, front_end: str, tally: Tally, note: str) -> str:
    line = (f"{scenario:16} {front_end:8} sent {tally.sent:5}  ok {tally.ok:5}  failed {tally.failed:3} "
            f"{dict(tally.failures) or ''}  {note}")
    print(line)
    return line


def served(host: Host) -> int:
    """Requests the host's current master has served (0 while it does not answer)."""
    stats = host.stats()
    return stats["totals"]["requests"] if stats else 0


def traffic_to(host: Host, baseline: int, timeout: float = 15.0) -> None:
    """Until the host serves requests again: its master counts more than ``baseline``."""
    poll(lambda: served(host) > baseline, timeout, f"{host.name} to serve requests again")


def sent_between(haproxy: HAProxy, host: Host, down: float, up: float) -> list[Routed]:
    """Requests HAProxy sent to ``host`` while it was DOWN. ``down`` and ``up`` are when the
    20 ms poll saw the change, a little after it happened: the window is narrowed by that."""
    lag = 0.1
    return [item for item in haproxy.routed() if host.address in item.hosts and down + lag < item.start < up - lag]


def attributed(routed: list[Routed], tally_failures: int, host: Host, before: float) -> list[Routed]:
    """The front end's failed requests: each must have been sent to ``host`` and begun before
    ``before`` (in flight there), and there are as many as the client counted."""
    failed = [item for item in routed if item.status >= 500]
    assert len(failed) == tally_failures, failed
    for item in failed:
        assert item.hosts and item.hosts[-1] == host.address and item.start <= before, (item, host)
    return failed


def test_rolling_upgrade_loses_no_request(site: Site):
    fleet, haproxy, nginx = site.fleet, site.haproxy, site.nginx
    before = {host.name: host.master_pid() for host in fleet.hosts}
    began = time.time()
    with StateWatch(haproxy) as watch, Load(haproxy.url, CLIENT_THREADS) as via_haproxy, \
            Load(nginx.url, CLIENT_THREADS) as via_nginx:
        via_haproxy.wait_for(50)
        via_nginx.wait_for(50)
        upgrade_began = time.time()
        upgrade = rolling_upgrade(fleet)
        upgrade_took = time.time() - upgrade_began
        via_haproxy.wait_for(50)
        via_nginx.wait_for(50)
    assert upgrade.returncode == 0, upgrade.stderr + "\n".join(h.log_tail() for h in fleet.hosts)
    after = {host.name: host.master_pid() for host in fleet.hosts}
    assert all(after[name] != before[name] for name in before), (before, after)
    haproxy_tally, nginx_tally = Tally.of(via_haproxy.outcomes), Tally.of(via_nginx.outcomes)
    # HAProxy saw each host go DOWN (its /readyz turned 503) and come back, and sent it nothing
    # in between.
    downs = []
    for host in fleet.hosts:
        down = watch.first(host.address, "DOWN", upgrade_began)
        up = down and watch.first(host.address, "UP", down)
        assert down and up, (host.name, watch.transitions)
        downs.append(up - down)
        assert not sent_between(haproxy, host, down, up)
    report("rolling upgrade", "HAProxy", haproxy_tally, f"each host out of rotation for {min(downs):.1f}-{max(downs):.1f}s")
    report("rolling upgrade", "nginx", nginx_tally, f"upgrade took {upgrade_took:.1f}s")
    assert haproxy_tally.sent > 100 and haproxy_tally.failed == 0, haproxy_tally
    assert nginx_tally.sent > 100 and nginx_tally.failed == 0, nginx_tally
    assert {r.status for r in nginx_routed(nginx.access_log()) if r.start >= began} == {200}


def gone(host: Host) -> bool:
    """No process left in the host's namespace (master and workers)."""
    return not run("ip", "netns", "pids", host.netns, check=False).stdout.strip()


def nginx_moved_on(nginx: Nginx, host: Host, after: float) -> Routed | None:
    """The first request nginx sent to ``host`` after ``after`` and then to another host."""
    return next((item for item in nginx_routed(nginx.access_log())
                 if item.start >= after and host.address in item.hosts[:-1]), None)


def test_master_killed_costs_only_its_requests_in_flight(site: Site):
    fleet, haproxy, nginx = site.fleet, site.haproxy, site.nginx
    victim = fleet.hosts[0]
    began = time.time()
    with StateWatch(haproxy) as watch, Load(haproxy.url, CLIENT_THREADS) as via_haproxy, \
            Load(nginx.url, CLIENT_THREADS) as via_nginx:
        via_haproxy.wait_for(50)
        via_nginx.wait_for(50)
        killed = time.time()
        os.kill(victim.master_pid(), signal.SIGKILL)
        down = poll(lambda: watch.first(victim.address, "DOWN", killed), 10, "HAProxy to mark the host DOWN")
        poll(lambda: gone(victim), 10, "the orphaned worker to exit")
        died = time.time()  # the worker notices its master is gone within half a second
        moved = poll(lambda: nginx_moved_on(nginx, victim, killed), 10, "nginx to try another host")
        via_haproxy.wait_for(50)
        via_nginx.wait_for(50)
        restarted = time.time()
        victim.start()
        poll(lambda: watch.first(victim.address, "UP", restarted), 10, "HAProxy to mark the host UP again")
        traffic_to(victim, 0)
        via_haproxy.wait_for(50)
        via_nginx.wait_for(50)
    haproxy_tally, nginx_tally = Tally.of(via_haproxy.outcomes), Tally.of(via_nginx.outcomes)
    report("master SIGKILL", "HAProxy", haproxy_tally, f"host DOWN {down - killed:.2f}s after the kill")
    report("master SIGKILL", "nginx", nginx_tally,
           f"host out after its first refused connection, {moved.end - killed:.2f}s after the kill "
           f"(its orphaned worker served until {died - killed:.2f}s)")
    assert down - killed <= FALL * CHECK_INTER + CHECK_INTER + SLACK
    # Nothing but requests in flight on the victim failed: at most one per client thread, each
    # sent there before its worker was gone.
    for tally, routed in ((haproxy_tally, haproxy.routed()), (nginx_tally, nginx_routed(nginx.access_log()))):
        assert tally.failed <= CLIENT_THREADS, tally
        attributed([r for r in routed if r.start >= began], tally.failed, victim, died)
    assert not sent_between(haproxy, victim, down, restarted)


def test_link_cut_costs_at_most_the_requests_in_flight(site: Site):
    fleet, haproxy, nginx = site.fleet, site.haproxy, site.nginx
    victim = fleet.hosts[1]
    began = time.time()
    with StateWatch(haproxy) as watch, Load(haproxy.url, CLIENT_THREADS) as via_haproxy, \
            Load(nginx.url, CLIENT_THREADS) as via_nginx:
        via_haproxy.wait_for(50)
        via_nginx.wait_for(50)
        cut = time.time()
        try:
            fleet.cut(victim)
            down = poll(lambda: watch.first(victim.address, "DOWN", cut), 10, "HAProxy to mark the host DOWN")
            moved = poll(lambda: nginx_moved_on(nginx, victim, cut), 10, "nginx to time out and move on")
        finally:
            fleet.restore(victim)
        restored, baseline = time.time(), served(victim)
        poll(lambda: watch.first(victim.address, "UP", restored), 10, "HAProxy to mark the host UP again")
        traffic_to(victim, baseline)
        via_haproxy.wait_for(50)
        via_nginx.wait_for(50)
    haproxy_tally, nginx_tally = Tally.of(via_haproxy.outcomes), Tally.of(via_nginx.outcomes)
    report("link cut", "HAProxy", haproxy_tally, f"host DOWN {down - cut:.2f}s after the cut")
    report("link cut", "nginx", nginx_tally,
           f"host out after its first connect timeout (1 s), {moved.end - cut:.2f}s after the cut; "
           f"link restored after {restored - cut:.1f}s")
    assert down - cut <= FALL * CHECK_INTER + CHECK_INTER + CHECK_TIMEOUT + SLACK
    for tally, routed in ((haproxy_tally, haproxy.routed()), (nginx_tally, nginx_routed(nginx.access_log()))):
        assert tally.failed <= CLIENT_THREADS, tally
        attributed([r for r in routed if r.start >= began], tally.failed, victim, cut)
    assert not sent_between(haproxy, victim, down, restored)
