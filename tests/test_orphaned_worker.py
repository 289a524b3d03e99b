"""A worker whose master was killed (SIGKILL, the OOM killer) stops the way TERM stops it: it
finishes what it holds — the request in the app, complete requests waiting their turn, a request
on a kept-alive connection — then exits. Found by the multi-host test (tests/test_multihost.py):
behind HAProxy, requests on a host whose master was SIGKILLed failed beyond the one in the app,
because the orphaned worker left its loop at once, dropping every connection it held.
"""

from __future__ import annotations

import signal

from conftest import free_port, status_of, wait_for

from forkserve.stats.top import fetch_stats


def test_orphaned_worker_serves_the_requests_it_holds(start_server):
    stats = f"127.0.0.1:{free_port()}"
    server = start_server("-w", "1", "--stats-bind", stats, "proxy_probe:application")
    server.wait_workers(1)
    in_app = server.connect(timeout=10)
    in_app.sendall(b"GET /probe?sleep=1 HTTP/1.1\r\nHost: test\r\n\r\n")
    wait_for(lambda: fetch_stats(stats)["workers"][0]["current_request"], timeout=5,
             message="the worker to be in the app")
    waiting = server.connect(timeout=10)
    waiting.sendall(b"GET /probe HTTP/1.1\r\nHost: test\r\n\r\n")  # complete: it waits its turn
    server.signal(signal.SIGKILL)
    replies = []
    for sock in (in_app, waiting):
        try:
            replies.append(status_of(sock.recv(100)))
        except OSError as error:
            replies.append(type(error).__name__)
        sock.close()
    assert replies == [200, 200]
