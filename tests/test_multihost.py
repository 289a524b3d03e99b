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

from collections.abc import Iterator

import pytest
from fleet import (
    APP_PORT,
    CHECK_INTER,
    FLEET_CONF,
    STATS_PORT,
    Host,
    Routed,
    Scenario,
    Site,
    running_site,
    scenario_cut_link,
    scenario_kill_master,
    scenario_rolling_upgrade,
)
from system_programs import require_network_namespaces, require_program

from forkserve.settings.resolve import resolve

FALL = 2                 # conf/haproxy.cfg
CHECK_TIMEOUT = 1.0      # conf/haproxy.cfg's `timeout check`
SHUTDOWN_DELAY = 2.0     # longer than HAProxy's FALL x CHECK_INTER and nginx's fail_timeout (2s)
CLIENT_THREADS = 2       # per front end
SETTLE = 50              # requests each load completes before, between and after the events
SLACK = 1.0              # for a loaded 2-core machine, on top of every detection bound
FRONT_ENDS = ("HAProxy", "nginx")


@pytest.fixture(scope="module")
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_network_namespaces()  # first: root and `ip netns` are what most machines lack
    haproxy = require_program("haproxy", "the front end of the multi-host test")
    tls_files = request.getfixturevalue("tls_files")  # nginx's certificate (openssl)
    with running_site(tmp_path_factory.mktemp("fleet"), tmp_path_factory.mktemp("nginx"), tls_files, haproxy,
                      SHUTDOWN_DELAY) as running:
        yield running


def test_the_fleet_config_listens_where_the_front_ends_look():
    config = resolve(["-c", str(FLEET_CONF)], {})
    assert config.bind == [f"0.0.0.0:{APP_PORT}"] and config.stats_bind == f"0.0.0.0:{STATS_PORT}"
    # HAProxy's production timing (conf/haproxy.cfg: inter 1s, fall 2, timeout check 1s) and
    # nginx's fail_timeout (2s) both fit in the shipped shutdown_delay.
    assert config.shutdown_delay > FALL * 1.0 + CHECK_TIMEOUT
    assert config.shutdown_delay >= 2.0


def report(result: Scenario) -> None:
    """The scenario's figures, one line per front end (pytest -s shows them)."""
    print("\n".join(result.lines()))


def sent_while_down(result: Scenario, host: Host, down: float, up: float) -> list[Routed]:
    """Requests HAProxy sent to ``host`` while it was DOWN. ``down`` and ``up`` are when the
    20 ms poll saw the change, a little after it happened: the window is narrowed by that."""
    lag = 0.1
    return [item for item in result.routed["HAProxy"] if host.address in item.hosts and down + lag < item.start < up - lag]


def assert_only_in_flight_failed(result: Scenario) -> None:
    """Each front end's failures: no more than one per client thread, each logged by the front
    end as sent to the victim before it stopped answering, as many as the client counted."""
    for front_end in FRONT_ENDS:
        assert result.tallies[front_end].failed <= CLIENT_THREADS, (front_end, result.tallies[front_end])
        assert not result.untraced_failures(front_end), result.untraced_failures(front_end)


def assert_fault_handled(result: Scenario, detection_bound: float) -> None:
    """HAProxy took the host out within its check interval and sent it nothing until it was
    back; only requests in flight on it failed, at either front end."""
    report(result)
    assert result.haproxy_down - result.event <= detection_bound + SLACK, result.notes()
    assert_only_in_flight_failed(result)
    assert not sent_while_down(result, result.victim, result.haproxy_down, result.haproxy_back)


def test_rolling_upgrade_loses_no_request(site: Site):
    before = {host.name: host.master_pid() for host in site.fleet.hosts}
    result = scenario_rolling_upgrade(site, CLIENT_THREADS, SETTLE)
    assert result.output.endswith("exit 0"), result.output + "\n".join(h.log_tail() for h in site.fleet.hosts)
    assert all(host.master_pid() != before[host.name] for host in site.fleet.hosts), before
    report(result)
    # HAProxy saw each host go DOWN (/readyz turned 503) and come back UP, and sent it nothing
    # in between; every host served again afterwards.
    for host in site.fleet.hosts:
        down = result.first(host.address, "DOWN", result.event)
        up = down and result.first(host.address, "UP", down)
        assert down and up, (host.name, result.transitions)
        assert not sent_while_down(result, host, down, up)
    for front_end in FRONT_ENDS:
        tally = result.tallies[front_end]
        assert tally.sent > 100 and tally.failed == 0, (front_end, tally)
        assert {item.status for item in result.routed[front_end]} == {200}


def test_master_killed_costs_only_its_requests_in_flight(site: Site):
    result = scenario_kill_master(site, site.fleet.hosts[0], CLIENT_THREADS, SETTLE)
    # The master's stats endpoint dies with it: the checks fail at once.
    assert_fault_handled(result, FALL * CHECK_INTER + CHECK_INTER)


def test_link_cut_costs_at_most_the_requests_in_flight(site: Site):
    result = scenario_cut_link(site, site.fleet.hosts[1], CLIENT_THREADS, SETTLE)
    # Checks get no answer: each fails after its connect timeout, min(timeout connect, inter).
    assert_fault_handled(result, FALL * CHECK_INTER + CHECK_INTER + CHECK_TIMEOUT)
