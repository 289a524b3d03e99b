"""shutdown_delay: TERM first fails readiness (/readyz 503, STOPPING=1) while the workers keep
serving, then shuts down as TERM does; a second TERM, or INT, ends the wait.

The expiry of the delay itself, under load through nginx, is in test_nginx_signals.py.
"""

from __future__ import annotations

import signal
import socket
import uuid

import pytest
from conftest import free_port, process_title, wait_for
from nginx import RequestLoop
from test_process_model import _receive

from forkserve.stats.top import get

LONG_DELAY = "120"  # never reached here: the master exiting at all shows the wait was ended


@pytest.mark.parametrize("ender", [signal.SIGTERM, signal.SIGINT], ids=["second-TERM", "INT"])
def test_term_drains_serving_until_a_second_term_or_int(start_server, ender):
    stats = f"127.0.0.1:{free_port()}"
    name = f"forkserve-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind("\0" + name)
        server = start_server("-w", "2", "--shutdown-delay", LONG_DELAY, "--stats-bind", stats,
                              "simple_apps:hello", env={"NOTIFY_SOCKET": "@" + name})
        _receive(notify, "READY=1")
        assert get(stats, "/readyz")[0] == 200
        workers = server.wait_workers(2)
        with RequestLoop(server.url, threads=2) as load:
            load.wait_for_requests(50)
            server.signal(signal.SIGTERM)
            assert _receive(notify, "STOPPING=1")["STATUS"] == "stopping"
            assert get(stats, "/readyz") == (503, b"fail: draining\n")
            assert get(stats, "/healthz")[0] == 200
            wait_for(lambda: "draining" in process_title(server.pid), 5, message="the master's title")
            server.signal(signal.SIGHUP)  # a reload now would restart what is about to stop
            wait_for(lambda: "HUP ignored: the server is draining" in server.log(), 10, message="HUP ignored")
            load.wait_for_requests(load.result.total + 50)
        assert not load.result.failures(), load.result.outcomes
        assert server.workers() == workers  # the same workers served on, none was stopped

        server.signal(ender)
        assert server.wait_exit(20) == 0
    log = server.log()
    assert "draining for shutdown_delay (120s)" in log and "reload" not in log.split("draining", 1)[1]
    if ender == signal.SIGTERM:
        assert "TERM received again during shutdown_delay: graceful shutdown now" in log
    else:
        assert "INT received: fast shutdown" in log
