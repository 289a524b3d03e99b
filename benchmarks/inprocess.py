"""Server-side CPU per request, in one process, without the network stack's noise.

Builds a worker's ServeContext around an app and serves requests over AF_UNIX socketpairs
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

from forkserve.http.connection import Connection, ServeContext

from forkserve.http.environ import EnvironBuilder, ErrorStream
from forkserve.http.head import HeadLimits
from forkserve.http.proxy import ProxyTrust
from forkserve.http.requestid import before_request_hook
from forkserve.process.scoreboard import Scoreboard
from forkserve.process.sockets import Listener
from forkserve.settings.registry import defaults

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: close\r\n\r\n"


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world!"]


def build_context(listener_fd: int) -> ServeContext:
    """A ServeContext like a worker's with default settings (access log off)."""
    config = defaults()
    proxy = ProxyTrust(config.forwarded_allow_ips, config.secure_scheme_headers)
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener = Listener(fake, "bench", "127.0.0.1", "8000")
    scoreboard = Scoreboard(4)
    scoreboard.claim(0, os.getpid())
    return ServeContext(
        app=hello,
        limits=HeadLimits.from_config(config),
        body_limit=config.limit_request_body,
        body_timeout=config.body_timeout,
        header_timeout=config.header_timeout,
        keepalive=config.keepalive,
        use_sendfile=True,
        slot=scoreboard.writer(0),
        builders={listener_fd: EnvironBuilder(listener, proxy, config.header_map, ErrorStream())},
        listener_fds=[],
        wakeup_fd=-1,
        should_stop=lambda: False,
        before_request=before_request_hook(config.request_id_header, proxy),
    )


def serve_one_connection(context: ServeContext, payload: bytes, listener_fd: int) -> float:
    """CPU seconds the server side spent on one connection carrying ``payload``."""
    client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    client.sendall(payload)
    client.shutdown(socket.SHUT_WR)
    started = time.process_time()
    Connection(context, server, ("127.0.0.1", 40000), listener_fd).serve()
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
    context = build_context(listener_fd=99)
    payload = REQUEST * args.per_connection
    connections = args.requests // args.per_connection
    for _ in range(200):
        serve_one_connection(context, payload, 99)
    total = sum(serve_one_connection(context, payload, 99) for _ in range(connections))
    print(f"{total / (connections * args.per_connection) * 1e6:.1f} us per request "
          f"({args.per_connection} per connection)")


if __name__ == "__main__":
    main()
