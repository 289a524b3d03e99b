"""A worker's connections and their states: reading, buffering, waiting, in the app, flushing.

Only complete requests reach the app. A connection is, at any moment, in one state:

- ``READING`` a request head (``header_timeout`` from the accept, or from the first byte of a
  request on a kept-alive connection), or ``BODY``: buffering its body (memory, then a temporary
  file; ``body_timeout`` without a byte ends it with a 408);
- ``IDLE`` between keep-alive requests (``keepalive`` seconds);
- ``READY``: complete, waiting its turn for the app, in arrival order; ``APP``: in the app;
- ``FLUSHING``: the app is done and the client has not taken all of the response yet (the loop
  sends the rest while the app runs other requests; ``body_timeout`` without progress ends it);
- ``LINGER``: refused or closed with request bytes possibly in flight: half-closed, read off for
  up to two seconds, so the reply is not lost to a reset.

Deadlines live in a heap, never in blocking socket timeouts; a deadline that moved later is
re-queued when its old one comes up, so a busy connection costs no heap push per read. A
connection's epoll interest is changed only when it differs at the loop's next wait (the loop in
:mod:`forkserve.worker.front` drives all of this).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import time
from collections import deque
from typing import Any

from forkserve.http.body import CONTINUE, BodyDecoder, RequestBody
from forkserve.http.connection import Outcome, RequestRunner, log_refusal, send_quietly
from forkserve.http.errors import ClientDisconnected, ClientTimeout, HttpError, error_reply
from forkserve.http.head import RECV_SIZE, RequestHead
from forkserve.http.spool import EMPTY_INPUT, BodySpool
from forkserve.http.uwsgi import UwsgiError, UwsgiReader
from forkserve.worker.conn import (
    APP,
    BODY,
    EPOLL_PROBLEM,
    EPOLLIN,
    EPOLLOUT,
    FLUSHING,
    IDLE,
    INFINITY,
    LINGER,
    LINGER_SECONDS,
    READING,
    READY,
    STAMP_SPACE,
    STATE_GROUP,
    STOP_GRACE,
    TIMESPEC,
    Conn,
    FrontSettings,
)
from forkserve.worker.outbound import Outbound
from forkserve.worker.tls import TlsSocket
from forkserve.worker.transport import Transport, TransportError

error_log = logging.getLogger("forkserve.error")

TIMER_SLACK = 32  # heap entries beyond twice the live connections before it is rebuilt


class Connections:
    """Every connection a worker holds, and the moves between states. The loop (Front) adds
    accepting, waiting and stopping."""

    def __init__(self, settings: FrontSettings, builders: dict[int, Any], runner: RequestRunner) -> None:
        self.settings = settings
        self.builders = builders
        self.runner = runner
        self.conns: dict[int, Conn] = {}
        self.ready: deque[Conn] = deque()
        self.dirty: list[Conn] = []  # connections whose epoll interest may have changed
        self.timers: list[tuple[float, int, Conn]] = []
        self.unscheduled: list[Conn] = []  # deadlines set this turn, for the heap (see _arm)
        self.now = time.monotonic()  # the loop's clock: read after each wait and each app call
        self.sequence = itertools.count()
        self.serials = itertools.count(1)  # connections accepted, numbered
        self.pid = os.getpid()
        self.counts = [0, 0, 0, 0]
        self.reported = [0, 0, 0, 0]  # the counts last written to the scoreboard
        self.stopping = False
        self.begun = 0  # requests handed to the app: what the recycling budget counts

    def _publish_counts(self) -> None:
        """Write the connection counts to the scoreboard when they changed since the last write
        (twice a second from the loop, and as a request enters the app on the loop's thread: a
        sync worker's loop does not turn while the app runs, and /stats must see that request)."""
        if self.counts != self.reported:
            self.reported = self.counts.copy()
            self._report_counts(*self.reported)

    def _report_counts(self, reading: int, idle: int, in_app: int, flushing: int) -> None:
        """Where the counts go: the worker's scoreboard slot (Front); nowhere by default."""

    def _set_state(self, conn: Conn, state: int, want: int) -> None:
        counts = self.counts
        counts[STATE_GROUP[conn.state]] -= 1
        counts[STATE_GROUP[state]] += 1
        conn.state = state
        if want != conn.want:
            conn.want = want
            self.dirty.append(conn)

    def _arm(self, conn: Conn, deadline: float) -> None:
        """Set the connection's deadline. The heap gets an entry at the loop's next wait, and
        only if the deadline is earlier than the one it has: a connection that is done within
        this turn (most are) costs no heap entry, and one whose deadline only moves later costs
        none until its old entry comes up."""
        conn.deadline = deadline
        if deadline < conn.timer_at and not conn.scheduling:
            conn.scheduling = True
            self.unscheduled.append(conn)

    def _schedule(self) -> None:
        """Heap entries for the deadlines set this turn (before the loop waits)."""
        timers = self.timers
        sequence = self.sequence
        for conn in self.unscheduled:
            conn.scheduling = False
            if not conn.closed and conn.deadline < conn.timer_at:
                conn.timer_at = conn.deadline
                heapq.heappush(timers, (conn.deadline, next(sequence), conn))
        self.unscheduled.clear()

    def _expire(self) -> None:
        timers = self.timers
        now = self.now
        while timers and timers[0][0] <= now:
            at, _, conn = heapq.heappop(timers)
            if conn.closed or at != conn.timer_at:
                continue  # closed, or a stale entry (an earlier one took its place)
            conn.timer_at = INFINITY
            if conn.deadline > now:
                if conn.deadline != INFINITY:
                    self._arm(conn, conn.deadline)  # it moved later meanwhile
                continue
            self._timed_out(conn)

    def _timed_out(self, conn: Conn) -> None:
        state = conn.state
        if state == READING and conn.reader.started:
            self._refuse(conn, ClientTimeout("request head not complete in time"))
        elif state == BODY:
            self._refuse(conn, ClientTimeout("client stalled while sending the body"))
        elif state == FLUSHING:
            error_log.debug("client %s did not read its response in time; closing", conn.peer)
            self._close(conn)
        else:  # a connection that never sent a request, an idle one, the end of a linger
            self._close(conn)

    def _on_event(self, conn: Conn, mask: int) -> None:
        state = conn.state
        if state == FLUSHING:
            self._flush(conn)
        elif state in (READING, IDLE, BODY, LINGER):
            self._read(conn)
        elif mask & EPOLL_PROBLEM and state == READY:
            self._close(conn)  # the client reset the connection; its request is dropped

    # -- accepting -----------------------------------------------------------------------------

    def _open(self, sock: socket.socket, peer: Any, listener_fd: int) -> None:
        sock.setblocking(False)
        settings = self.settings
        conn = Conn(sock, peer, self.builders[listener_fd], settings.limits,
                    Outbound(sock, settings.output_cap, settings.body_timeout, self.runner.waits),
                    f"{self.pid}.{next(self.serials)}")
        if settings.transports and not self._set_up_transport(conn):
            return
        self.conns[conn.fd] = conn
        self.counts[STATE_GROUP[READING]] += 1
        conn.want = EPOLLIN
        self.dirty.append(conn)
        self._arm(conn, self.now + settings.header_timeout)
        self._read(conn)

    def _set_up_transport(self, conn: Conn) -> bool:
        """TLS, a PROXY header, or uwsgi packets on this connection; False if it was refused."""
        settings = self.settings
        if settings.protocol == "uwsgi":
            assert settings.uwsgi_trust is not None
            if not settings.uwsgi_trust.trusts(conn.remote_addr):
                error_log.info("closed the connection from %s: not in uwsgi_allow_ips", conn.peer)
                conn.sock.close()
                return False
            conn.reader = UwsgiReader(settings.limits.head_size)  # type: ignore[assignment]
        if settings.tls is not None or settings.proxy_protocol != "off":
            trust = settings.proxy_trust
            allowed = trust is not None and trust.trusts(conn.remote_addr)
            conn.transport = Transport(settings.proxy_protocol, allowed, settings.tls)
            if conn.transport.tls is not None:
                conn.sink.tls = conn.transport.tls
        return True

    def _end_transport(self, conn: Conn, error: Exception) -> None:
        """A refused PROXY header, TLS handshake or uwsgi packet: one info line, then the end
        (after a plain-HTTP client's 400, a linger so it is not reset away)."""
        error_log.info("closed the connection from %s: %s", conn.peer, error)
        reply = getattr(error, "reply", b"")
        if reply:
            conn.sink.tls = None
            send_quietly(conn.sink, reply)
            self._linger(conn)
        else:
            self._close(conn)

    # -- reading -------------------------------------------------------------------------------

    def _read(self, conn: Conn) -> None:
        try:
            data, stamp, _, _ = conn.sock.recvmsg(RECV_SIZE, STAMP_SPACE)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            if conn.state == BODY or (conn.state == READING and conn.reader.started):
                error_log.debug("client %s closed the connection in the middle of a request", conn.peer)
            self._close(conn)
            return
        if stamp:  # when these bytes reached the kernel (TCP): the app may have been busy then
            seconds, nanoseconds = TIMESPEC.unpack(stamp[0][2])
            conn.arrived = seconds + nanoseconds * 1e-9
        else:
            conn.arrived = 0.0
        if conn.transport is not None:
            try:
                data = conn.transport.unwrap(conn, data)
            except (TransportError, ClientDisconnected) as error:
                self._end_transport(conn, error)
                return
            if not data:
                return
        state = conn.state
        if state == BODY:
            self._body_data(conn, data)
        elif state != LINGER:
            self._head_data(conn, data)

    def _head_data(self, conn: Conn, data: bytes) -> None:
        try:
            head = conn.reader.feed(data)
        except HttpError as error:
            self._refuse(conn, error)
            return
        except UwsgiError as error:  # a proxy's malformed packet: no HTTP reply on this protocol
            self._end_transport(conn, TransportError(str(error)))
            return
        if head is not None:
            self._head_complete(conn, head)
        elif conn.state == IDLE:  # the first bytes of the next request: its head deadline starts
            self._set_state(conn, READING, EPOLLIN)
            self._arm(conn, self.now + self.settings.header_timeout)

    def _head_complete(self, conn: Conn, head: RequestHead) -> None:
        conn.head = head
        conn.head_at = conn.arrived or time.time()
        settings = self.settings
        length = head.content_length
        if not length and not head.chunked:
            conn.leftover = head.leftover
            self._make_ready(conn, conn.head_at)
            return
        limit = settings.body_limit
        if limit and length and length > limit:
            self._refuse(conn, HttpError(413, f"Content-Length {length} over limit {limit}"))
            return
        decoder = BodyDecoder(length, head.chunked, limit)
        if not settings.request_buffering:  # the app reads (and decodes) the body as it comes
            tls = conn.transport.tls if conn.transport is not None else None
            source = conn.sock if tls is None else TlsSocket(conn.sock, tls)
            conn.streaming = RequestBody(source, settings.body_timeout, decoder,  # type: ignore[arg-type]
                                         head.expect_continue, self.runner.waits, head.leftover)
            conn.wsgi_input = conn.streaming
            self._make_ready(conn, conn.head_at)
            return
        try:
            first = decoder.feed(head.leftover)
        except HttpError as error:
            self._refuse(conn, error)
            return
        if head.expect_continue:
            # The client may wait for our go-ahead before sending the body. Sent even when the
            # body came along anyway (RFC 9110 allows either), so the reply does not depend on
            # how the bytes were split.
            try:
                conn.sink.send(CONTINUE)
            except ClientDisconnected:
                self._close(conn)
                return
        conn.decoder = decoder
        conn.spool = BodySpool(settings.buffer_memory, settings.tmp_dir)
        if self._spool(conn, first):
            return
        self._set_state(conn, BODY, EPOLLIN)
        self._arm(conn, self.now + settings.body_timeout)

    def _body_data(self, conn: Conn, data: bytes) -> None:
        assert conn.decoder is not None
        try:
            body = conn.decoder.feed(data)
        except HttpError as error:
            self._refuse(conn, error)
            return
        if not self._spool(conn, body):
            conn.deadline = self.now + self.settings.body_timeout  # moved later: lazily

    def _spool(self, conn: Conn, body: bytes) -> bool:
        """Keep body bytes; once the body is complete, the request is ready. True if it ended."""
        spool = conn.spool
        decoder = conn.decoder
        assert spool is not None and decoder is not None
        try:
            spool.write(body)
        except OSError as error:
            error_log.error("cannot buffer the request body of %s: %s", conn.peer, error)
            self._refuse(conn, HttpError(503, "no room to buffer the request body"), log=False)
            return True
        if not decoder.done:
            return False
        conn.leftover = decoder.leftover
        conn.wsgi_input = spool.input()
        self._make_ready(conn, conn.arrived or time.time())
        return True

    def _make_ready(self, conn: Conn, now: float) -> None:
        conn.ready_at = now
        self._set_state(conn, READY, 0)
        conn.deadline = INFINITY
        self.ready.append(conn)

    # -- the app, and after it -----------------------------------------------------------------

    def _run(self, conn: Conn) -> None:
        """The app call on the loop's own thread (``threads = 1``)."""
        if conn.closed:
            return
        self._set_state(conn, APP, 0)
        self._publish_counts()
        self.begun += 1
        outcome = None
        try:
            outcome = self.runner.run(conn)
        finally:
            self.now = time.monotonic()
            self._complete(conn, outcome)

    def _complete(self, conn: Conn, outcome: Outcome | None) -> None:
        """The app is done with a request (here or in an app thread): flush, then what's next."""
        self._end_request(conn)
        if conn.closed:
            return
        if outcome is None:  # (an app thread failed outside the app)
            self._close(conn)
        elif conn.sink:
            conn.after = outcome
            self._set_state(conn, FLUSHING, EPOLLOUT)
            self._arm(conn, self.now + self.settings.body_timeout)
        else:
            self._after_response(conn, outcome)

    def _end_request(self, conn: Conn) -> None:
        """Release what the request held (its buffered body)."""
        if conn.spool is not None:
            conn.spool.close()
            conn.spool = None
        conn.decoder = None
        conn.wsgi_input = EMPTY_INPUT

    def _after_response(self, conn: Conn, outcome: Outcome) -> None:
        """The response is all with the client: the next request, a linger, or the end."""
        if not outcome.keep_alive:
            if outcome.linger:
                self._linger(conn)
            else:
                self._close(conn)
            return
        leftover = outcome.leftover if conn.streaming is not None else conn.leftover
        conn.streaming = None
        conn.head = None
        conn.leftover = b""
        conn.after = None
        self._set_state(conn, IDLE, EPOLLIN)
        grace = STOP_GRACE if self.stopping else self.settings.keepalive
        self._arm(conn, self.now + grace)
        if leftover:
            self._head_data(conn, leftover)

    def _flush(self, conn: Conn) -> None:
        try:
            done = conn.sink.flush()
        except ClientDisconnected as error:
            error_log.debug("client %s went away while taking its response: %s", conn.peer, error)
            self._close(conn)
            return
        if not done:
            conn.deadline = self.now + self.settings.body_timeout  # progress: lazily later
            return
        outcome, conn.after = conn.after, None
        if outcome is None:
            self._close(conn)
        else:
            self._after_response(conn, outcome)

    def _refuse(self, conn: Conn, error: HttpError, log: bool = True) -> None:
        """Answer a refused request (4xx, Connection: close) and linger: no traceback, one line."""
        if log:
            log_refusal(conn.peer, error)
        send_quietly(conn.sink, error_reply(error.status))
        self._linger(conn)

    def _linger(self, conn: Conn) -> None:
        """Half-close, and read off what the client still sends, so our reply is not reset away."""
        if conn.sink:  # the reply first
            conn.after = Outcome(False, b"", True, 0, 0)
            self._set_state(conn, FLUSHING, EPOLLOUT)
            self._arm(conn, self.now + self.settings.body_timeout)
            return
        if conn.transport is not None:
            self._say_goodbye(conn)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self._end_request(conn)
        self._set_state(conn, LINGER, EPOLLIN)
        self._arm(conn, self.now + LINGER_SECONDS)

    def _say_goodbye(self, conn: Conn) -> None:
        """TLS: close_notify before the connection ends, best effort (the socket may be full)."""
        closing = conn.transport.closing_bytes()  # type: ignore[union-attr]
        if closing:
            with contextlib.suppress(OSError):
                conn.sock.send(closing)

    def _close(self, conn: Conn) -> None:
        if conn.closed:
            return
        if conn.transport is not None and conn.state != LINGER and not conn.sink:
            self._say_goodbye(conn)
        conn.closed = True
        self.counts[STATE_GROUP[conn.state]] -= 1
        del self.conns[conn.fd]
        conn.sink.discard()
        self._end_request(conn)
        conn.sock.close()  # (which also takes it out of epoll)
        if len(self.timers) > 2 * len(self.conns) + TIMER_SLACK:
            self._compact_timers()

    def _compact_timers(self) -> None:
        """Drop the heap entries of closed connections (and stale ones of live connections).

        A closed connection's entry stays in the heap until its deadline comes up (taking it
        out would cost a search), holding the connection — its TLS state, buffers — until then:
        at a few thousand new TLS connections a second, with a header_timeout of seconds, that was
        hundreds of MB per worker. Once the entries outnumber twice the live connections, the
        heap is rebuilt from the live ones: amortized O(1) per close, memory bounded by the
        connections actually held.
        """
        timers = self.timers
        sequence = self.sequence
        timers[:] = [(conn.timer_at, next(sequence), conn) for conn in self.conns.values()
                     if conn.timer_at != INFINITY]
        heapq.heapify(timers)

    # -- stopping ------------------------------------------------------------------------------
