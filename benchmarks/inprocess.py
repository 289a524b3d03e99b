"""Server-side CPU per request, in one process, without the network stack's noise.

Builds a worker's connection states and request runner around an app and serves requests over AF_UNIX socketpairs
(one connection per request, or N requests pipelined on one connection), timing only the
server side with ``time.process_time``. Useful to compare two versions of the request path
back to back: ``python -m benchmarks.inprocess`` (see ``--help``). Figures are lower than over
TCP (no TCP stack, no wrk), and they are per request of Python work plus AF_UNIX syscalls.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from typing import Any

from forkserve.http.connection import RequestRunner
from forkserve.http.environ import EnvironBuilder, ErrorStream
from forkserve.http.head import HeadLimits
from forkserve.http.proxy import ProxyTrust
from forkserve.http.requestid import before_request_hook
from forkserve.process.scoreboard import Scoreboard
from forkserve.process.sockets import Listener
from forkserve.settings.registry import defaults
from forkserve.worker.conn import FrontSettings
from forkserve.worker.connection import Connections

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: close\r\n\r\n"
KEEP_ALIVE_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world!"]


def build_connections(listener_fd: int) -> Connections:
    """A worker's connection states and request runner, with default settings (access log off)."""
    config = defaults()
    proxy = ProxyTrust(config.forwarded_allow_ips, config.secure_scheme_headers)
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener = Listener(fake, "bench", "127.0.0.1", "8000")
    scoreboard = Scoreboard(4)
    scoreboard.claim(0, os.getpid())
    runner = RequestRunner(hello, scoreboard.writer(0), keepalive=True, use_sendfile=True,
                           should_stop=lambda: False,
                           before_request=before_request_hook(config.request_id_header, proxy))
    settings = FrontSettings(
        limits=HeadLimits.from_config(config), header_timeout=config.header_timeout,
        body_timeout=config.body_timeout, keepalive=config.keepalive,
        worker_connections=config.worker_connections, request_buffering=config.request_buffering,
        buffer_memory=config.request_buffer_size, tmp_dir=None, body_limit=config.limit_request_body,
        output_cap=4 << 20,
    )
    return Connections(settings, {listener_fd: EnvironBuilder(listener, proxy, config.header_map, ErrorStream())},
                       runner)


def serve_one_connection(connections: Connections, payload: bytes, listener_fd: int) -> float:
    """CPU seconds the server side spent on one connection carrying ``payload``: read as the
    loop reads a freshly accepted connection, then its ready requests run in turn."""
    client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    client.sendall(payload)
    client.shutdown(socket.SHUT_WR)
    started = time.process_time()
    connections._open(server, ("127.0.0.1", 40000), listener_fd)
    while connections.ready:
        connections._run(connections.ready.popleft())
    for conn in list(connections.conns.values()):
        connections._close(conn)
    spent = time.process_time() - started
    while client.recv(65536):
        pass
    client.close()
    return spent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--per-connection", type=int, default=1, help="requests pipelined per connection")
    args = parser.parse_args(argv)
    worker = build_connections(listener_fd=99)
    payload = KEEP_ALIVE_REQUEST * (args.per_connection - 1) + REQUEST
    count = args.requests // args.per_connection
    for _ in range(200):
        serve_one_connection(worker, payload, 99)
    total = sum(serve_one_connection(worker, payload, 99) for _ in range(count))
    print(f"{total / (count * args.per_connection) * 1e6:.1f} us per request "
          f"({args.per_connection} per connection)")


if __name__ == "__main__":
    main()
