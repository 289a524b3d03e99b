"""A connection the worker's loop holds, its states, and the loop's settings.

The states (see :mod:`forkserve.worker.connection` for what moves a connection between them):
``READING`` a head (or a PROXY header, or a TLS handshake), ``IDLE`` between keep-alive
requests, ``BODY`` buffering a body, ``READY`` waiting for the app, ``APP`` in it, ``FLUSHING``
the rest of a response, ``LINGER`` closing without losing the last reply.
"""

from __future__ import annotations

import select
import socket
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from forkserve.http.body import BodyDecoder, RequestBody
from forkserve.http.connection import Outcome
from forkserve.http.head import HeadLimits, HeadReader, RequestHead
from forkserve.http.proxy import ProxyTrust
from forkserve.http.spool import EMPTY_INPUT, BodySpool
from forkserve.worker.outbound import Outbound
from forkserve.worker.transport import Transport

if TYPE_CHECKING:
    import ssl

READING, IDLE, BODY, READY, APP, FLUSHING, LINGER = range(7)
# The scoreboard's four connection counts: reading, idle, in the app (or waiting for it), flushing
STATE_GROUP = (0, 1, 0, 2, 2, 3, 0)
INFINITY = float("inf")
STOP_GRACE = 0.1  # an idle connection's grace for a request on its way when the worker stops
LINGER_SECONDS = 2.0
TIMESPEC = struct.Struct("qq")
STAMP_SPACE = socket.CMSG_SPACE(TIMESPEC.size)
EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLL_PROBLEM = select.EPOLLERR | select.EPOLLHUP


@dataclass(frozen=True)
class FrontSettings:
    """The worker's settings the loop needs, resolved once."""

    limits: HeadLimits
    header_timeout: float
    body_timeout: float
    keepalive: float
    worker_connections: int
    request_buffering: bool
    buffer_memory: int
    tmp_dir: str | None
    body_limit: int
    output_cap: int
    tls: ssl.SSLContext | None = None
    proxy_protocol: str = "off"
    proxy_trust: ProxyTrust | None = None  # who may send a PROXY header
    protocol: str = "http"
    uwsgi_trust: ProxyTrust | None = None  # who may send uwsgi packets

    @cached_property
    def transports(self) -> bool:
        """Does a connection need more than plain HTTP (TLS, a PROXY header, uwsgi)? (Asked
        for every new connection: computed once.)"""
        return self.tls is not None or self.proxy_protocol != "off" or self.protocol != "http"


class Conn:
    """One client connection held by the loop, and the request it is on."""

    __slots__ = (
        "after",
        "arrived",
        "builder",
        "closed",
        "connection_id",
        "deadline",
        "decoder",
        "fd",
        "head",
        "head_at",
        "leftover",
        "mask",
        "reader",
        "ready_at",
        "registered",
        "remote_addr",
        "remote_port",
        "scheduling",
        "sink",
        "sock",
        "spool",
        "state",
        "streaming",
        "timer_at",
        "transport",
        "want",
        "wsgi_input",
    )

    def __init__(self, sock: socket.socket, peer: Any, builder: Any, limits: HeadLimits, sink: Outbound,
                 connection_id: str) -> None:
        self.sock = sock
        self.connection_id = connection_id
        self.fd = sock.fileno()
        if type(peer) is tuple:
            self.remote_addr, self.remote_port = str(peer[0]), str(peer[1])
        else:
            self.remote_addr = self.remote_port = ""
        self.builder = builder
        self.sink = sink
        self.reader = HeadReader(limits)
        self.state = READING
        self.closed = False
        self.registered = False
        self.mask = 0
        self.want = 0
        self.deadline = INFINITY
        self.timer_at = INFINITY  # the deadline of its earliest heap entry
        self.scheduling = False  # waiting in Connections.unscheduled for a heap entry
        self.head: RequestHead | None = None
        self.head_at = self.ready_at = 0.0
        self.arrived = 0.0  # wall-clock arrival of the last bytes read (kernel stamp), 0 if unknown
        self.leftover = b""
        self.decoder: BodyDecoder | None = None
        self.spool: BodySpool | None = None
        self.streaming: RequestBody | None = None
        self.wsgi_input: Any = EMPTY_INPUT
        self.after: Outcome | None = None
        self.transport: Transport | None = None  # a PROXY header and/or TLS before HTTP

    @property
    def peer(self) -> str:
        return f"{self.remote_addr}:{self.remote_port}" if self.remote_addr else "unix socket peer"
