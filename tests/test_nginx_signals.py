"""Signals to forkserve under load through a real nginx, over the TCP and the unix-socket upstream.

nginx never retries a POST on another connection, so a connection forkserve drops under a
request shows up as a 502 in nginx's access log: these tests load forkserve with POSTs and
require nothing but 200s there while it is reloaded (HUP), stopped (TERM) with requests queued,
or drained by ``shutdown_delay``.
"""

from __future__ import annotations

import signal
import threading

import pytest
import requests
from conftest import free_port, wait_for
from nginx import RequestLoop

from forkserve.stats.top import fetch_stats, get

TRANSPORTS = ["tcp", "unix"]
PAYLOAD = b"y" * 2000


def assert_nginx_saw_only_200s(proxy, result=None) -> None:
    """Every request nginx logged was a 200, and nginx never saw forkserve drop a connection."""
    if result is not None:
        assert result.total and not result.failures(), (result.outcomes, proxy.error_log())
    statuses = proxy.access_statuses()
    assert statuses and set(statuses) == {200}, (statuses, proxy.error_log())
    assert "prematurely closed" not in proxy.error_log(), proxy.error_log()


@pytest.mark.parametrize("strategy", ["all", "rolling"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hup_under_post_load_through_nginx(behind_nginx, transport, strategy):
    server, proxy = behind_nginx(transport, "-w", "2", "--keep-alive", "15", "--reload-strategy", strategy,
                                 "proxy_probe:application")
    old = set(server.wait_workers(2))
    with RequestLoop(f"{proxy.url}/post", threads=4, method="POST", data=PAYLOAD) as load:
        load.wait_for_requests(100)
        server.signal(signal.SIGHUP)
        wait_for(lambda: "reload complete" in server.log(), 20, message="the reload")
        wait_for(lambda: not old & set(server.workers()), 20, message="the old workers to exit")
        load.wait_for_requests(load.result.total + 100)
    assert_nginx_saw_only_200s(proxy, load.result)
    assert len(server.wait_workers(2)) == 2


def backlog(stats: str) -> tuple[int, int]:
    """(connections waiting in the listen queue, those plus the ones the workers hold in any
    state), from one look at /stats."""
    snapshot = fetch_stats(stats)
    queued = snapshot["listeners"][0]["queue_depth"]
    return queued, queued + sum(snapshot["connections_by_state"].values())


def post_in_thread(url: str, outcomes: list[object]) -> threading.Thread:
    def post() -> None:
        try:
            outcomes.append(requests.post(url, data=PAYLOAD, timeout=30).status_code)
        except requests.RequestException as error:
            outcomes.append(type(error).__name__)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_term_answers_every_request_queued_through_nginx(behind_nginx, transport):
    # Two workers, each busy for 0.6 s per request; six POSTs: two in the workers, four waiting
    # in forkserve's listen queue (the stats endpoint counts them; two still wait after the first
    # round) when TERM arrives. Every one gets its 200: the stopping workers serve the backlog
    # before they exit.
    stats = f"127.0.0.1:{free_port()}"
    server, proxy = behind_nginx(transport, "-w", "2", "--stats-bind", stats, "proxy_probe:application")
    server.wait_workers(2)
    outcomes: list[object] = []
    threads = [post_in_thread(f"{proxy.url}/post?sleep=0.6", outcomes) for _ in range(6)]
    # TERM only once nginx has opened all six upstream connections (a connect after TERM is
    # refused by design, and nginx does not retry a POST): held by the workers or still queued.
    wait_for(lambda: (seen := backlog(stats))[0] >= 2 and seen[1] >= 6, 20,
             message="six connections held or queued in forkserve's backlog")
    server.signal(signal.SIGTERM)
    for thread in threads:
        thread.join(40)
    assert outcomes == [200] * 6, (outcomes, proxy.error_log())
    assert server.wait_exit(20) == 0
    assert proxy.access_statuses() == {200: 6}, proxy.access_log()
    assert "queued connection(s) before exiting" in server.log()  # the backlog was there at TERM


@pytest.mark.slow
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_shutdown_delay_keeps_serving_through_nginx_then_exits(behind_nginx, transport):
    # The delay is long enough for the requests below on a busy machine, and it is checked: the
    # load stops before the master begins its shutdown, so every request fell inside the delay.
    stats = f"127.0.0.1:{free_port()}"
    server, proxy = behind_nginx(transport, "-w", "2", "--keep-alive", "15", "--shutdown-delay", "4",
                                 "--stats-bind", stats, "proxy_probe:application")
    with RequestLoop(f"{proxy.url}/post", threads=4, method="POST", data=PAYLOAD) as load:
        load.wait_for_requests(50)
        server.signal(signal.SIGTERM)
        wait_for(lambda: get(stats, "/readyz") == (503, b"fail: draining\n"), 5, message="/readyz to fail")
        load.wait_for_requests(load.result.total + 100)
    assert "shutdown_delay is over" not in server.log(), "the load outlasted the 4 s delay (busy machine?)"
    assert_nginx_saw_only_200s(proxy, load.result)
    assert server.wait_exit(20) == 0
    assert "shutdown_delay is over: graceful shutdown" in server.log()
