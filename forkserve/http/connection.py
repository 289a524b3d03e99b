"""One client connection, from accept to close: requests in order, keep-alive, errors.

Keep-alive never starves the queue: a response keeps the connection open only if no other
connection is waiting on a listening socket at that moment, and while the connection idles
between requests the worker also watches the listeners and its stop signal, closing the idle
connection the moment anyone else needs the worker.
"""

from __future__ import annotations

import fcntl
import logging
import select
import socket
import struct
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forkserve.http.body import RequestBody
from forkserve.http.environ import EnvironBuilder
from forkserve.http.errors import ClientDisconnected, HttpError, error_reply
from forkserve.http.head import HeadLimits, RecvTimeout, RequestHead, read_head
from forkserve.http.protocols import Slot
from forkserve.http.response import AppError, Response
from forkserve.http.sockopts import timeval
from forkserve.http.waiting import ClientWaits

DRAIN_BUDGET = 256 * 1024
LINGER_SECONDS = 2.0
IDLE_GRACE = 0.05  # seconds an idle keep-alive connection keeps its worker once others queue
STOP_GRACE = 0.1  # the same when the worker must stop (HUP, TERM, recycling)
REQUEST_LINE_ROOM = 90
DELIVERY_POLL = 0.005  # seconds between looks at the send queue while a response is in flight
_COUNT = struct.Struct("i")
error_log = logging.getLogger("forkserve.error")  # by name: forkserve.process.logs sets it up


@dataclass
class ServeContext:
    """What a worker gives every connection it serves. Built once per worker."""

    app: Callable[..., Any]
    limits: HeadLimits
    body_limit: int
    body_timeout: float
    header_timeout: float
    keepalive: float
    use_sendfile: bool
    slot: Slot
    builders: dict[int, EnvironBuilder]
    listener_fds: list[int]
    wakeup_fd: int
    should_stop: Callable[[], bool]
    after_request: Callable[[dict[str, Any], Response, float], None] | None = None
    # (environ, response, peer address): e.g. the request id, which may add a response header
    before_request: Callable[[dict[str, Any], Response, str], None] | None = None
    waiting_poller: select.poll = field(default_factory=select.poll)
    idle_poller: select.poll = field(default_factory=select.poll)

    def __post_init__(self) -> None:
        self.waits = ClientWaits(self.slot)
        for fd in self.listener_fds:
            self.waiting_poller.register(fd, select.POLLIN)
            self.idle_poller.register(fd, select.POLLIN)
        if self.wakeup_fd >= 0:
            self.idle_poller.register(self.wakeup_fd, select.POLLIN)
        self.keepalive_ms = int(self.keepalive * 1000)

    def others_waiting(self) -> bool:
        """Is a connection queued on any listening socket right now? (one poll, no wait)"""
        return bool(self.waiting_poller.poll(0))


def unsent_bytes(fd: int) -> int:
    """Bytes of ours the peer has not yet taken: TCP's unsent and unacknowledged bytes, a unix
    socket's bytes the peer has not read (SIOCOUTQ). 0 if the socket cannot say."""
    try:
        return _COUNT.unpack(fcntl.ioctl(fd, termios.TIOCOUTQ, bytes(_COUNT.size)))[0]
    except OSError:
        return 0


def peer_strings(peer: Any) -> tuple[str, str]:
    """REMOTE_ADDR and REMOTE_PORT from accept()'s address: empty strings for unix sockets."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), str(peer[1])
    return "", ""


class Connection:
    """Serves the requests of one accepted socket, in order, until it must close."""

    __slots__ = ("builder", "ctx", "remote_addr", "remote_port", "sock", "timeouts")

    def __init__(self, ctx: ServeContext, sock: socket.socket, peer: Any, listener_fd: int) -> None:
        self.ctx = ctx
        self.sock = sock
        self.remote_addr, self.remote_port = peer_strings(peer)
        self.builder = ctx.builders[listener_fd]
        self.timeouts = RecvTimeout(sock, ctx.header_timeout)

    def serve(self) -> None:
        """The keep-alive loop. Always closes the socket."""
        try:
            leftover = b""
            first = True
            while True:
                if not first and not leftover and not self._wait_idle():
                    return
                first = False
                try:
                    head = read_head(self.sock, leftover, self.ctx.limits, self.timeouts)
                except HttpError as error:
                    self._refuse(error)
                    return
                except (ClientDisconnected, OSError):
                    return
                if head is None:
                    return
                leftover = self._respond(head)
                if leftover is None:
                    return
        finally:
            self.sock.close()

    def _wait_idle(self) -> bool:
        """Between requests: True when the client sends again before anyone else needs us.

        A request the client has already sent is always served (with ``Connection: close`` when
        the worker is stopping): closing a connection with a request in it loses that request,
        and a proxy such as nginx does not retry a POST. So when others are queued or the worker
        must stop, the connection gets a short grace for a request already on its way.
        """
        ctx = self.ctx
        fd = self.sock.fileno()
        if ctx.should_stop():
            return self._request_on_its_way(fd, STOP_GRACE)
        poller = ctx.idle_poller
        idle_since = time.monotonic()
        poller.register(fd, select.POLLIN)
        try:
            events = poller.poll(ctx.keepalive_ms)
        finally:
            poller.unregister(fd)
        if any(ready == fd for ready, _ in events):
            return True
        if not events:
            return False  # idle timeout
        if ctx.should_stop():
            return self._request_on_its_way(fd, STOP_GRACE)
        # Someone else is queued. A client that went quiet just now may be sending its next
        # request this instant; give it a moment so we do not close under its feet.
        # If it is still reading our response, the moment starts when it has all of it.
        if unsent_bytes(fd):
            delivered = self._delivered(fd, idle_since + ctx.keepalive, ctx.should_stop)
            if delivered is None:
                return True  # the next request came while the client was still reading
            if not delivered:
                return False
            idle_since = time.monotonic()
        return self._request_on_its_way(fd, IDLE_GRACE - (time.monotonic() - idle_since))

    @staticmethod
    def _request_on_its_way(fd: int, grace: float) -> bool:
        """True if the client's next request arrives within ``grace`` seconds."""
        return grace > 0 and bool(select.select([fd], [], [], grace)[0])

    @staticmethod
    def _delivered(fd: int, deadline: float, should_stop: Callable[[], bool]) -> bool | None:
        """Wait until the client has taken the whole response off our send queue.

        A large response is still queued in the kernel when the worker goes idle, and the
        client can only send its next request after reading it: an idle grace counted from the
        moment we handed it over would close under a client that is still reading. True once
        the queue is empty, None if the client sent again meanwhile, False at ``deadline`` (the
        keep-alive idle timeout: no queued client waits longer than that) or when the worker
        must stop (closing then still delivers what is queued).
        """
        while unsent_bytes(fd):
            left = deadline - time.monotonic()
            if left <= 0 or should_stop():
                return False
            if select.select([fd], [], [], min(DELIVERY_POLL, left))[0]:
                return None
        return True

    def _respond(self, head: RequestHead) -> bytes | None:
        """Run the app for one request. The bytes already received after it (the start of the
        next request) if the connection may carry another, else None."""
        ctx = self.ctx
        started = time.time()
        line = head.method + b" " + head.target[:REQUEST_LINE_ROOM]
        ctx.slot.begin(started, line)
        ctx.waits.start_request(started, line)
        leftover, status, sent = None, 0, 0
        try:
            leftover, status, sent = self._run_app(head, started)
            return leftover
        finally:
            ctx.slot.idle(time.time(), started, status, sent)

    def _run_app(self, head: RequestHead, started: float) -> tuple[bytes | None, int, int]:
        """(the bytes already received after this request if the connection may carry another,
        else None; the status sent; the bytes sent)."""
        ctx = self.ctx
        if ctx.body_limit and (head.content_length or 0) > ctx.body_limit:
            self._refuse(HttpError(413, f"Content-Length {head.content_length} over limit {ctx.body_limit}"))
            return None, 413, 0
        body = RequestBody(
            self.sock, self.timeouts, ctx.body_timeout, ctx.body_limit, head.leftover,
            head.content_length, head.chunked, head.expect_continue, ctx.waits,
        )
        try:
            environ = self.builder.build(head, self.remote_addr, self.remote_port, body)
        except HttpError as error:  # e.g. contradictory scheme headers from a trusted proxy
            self._refuse(error)
            return None, error.status, 0

        def decide_keep_alive() -> bool:
            return (
                head.keep_alive
                and not head.must_close
                and ctx.keepalive > 0
                and body.failure is None
                and (body.complete or _drainable(head, body))
                and not ctx.should_stop()
                and not ctx.others_waiting()
            )

        response = Response(
            self.sock, head.method == b"HEAD", head.version == b"1.1", decide_keep_alive, ctx.use_sendfile,
            ctx.waits,
        )
        keep_alive = False
        try:
            if ctx.before_request is not None:
                ctx.before_request(environ, response, self.remote_addr)
            result = ctx.app(environ, response.start_response)
            try:
                response.finish(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            keep_alive = response.keep_alive and body.failure is None
        except ClientDisconnected as error:
            error_log.debug("client %s went away during %s: %s", self._peer(), _line(head), error)
        except HttpError as error:
            if body.failure is error or error is body.failure:
                if not response.head_sent:
                    response.status_code = error.status
                self._refuse(error, sent=response.head_sent)
            else:
                self._app_failed(head, response)
        except AppError as error:
            error_log.error("%s: %s", _line(head), error)
            self._fail_response(response)
        except Exception:  # noqa: BLE001 -- any app error becomes a 500; the worker keeps serving
            self._app_failed(head, response)
        if keep_alive and not body.complete:
            keep_alive = body.drain(DRAIN_BUDGET)
        if ctx.after_request is not None:
            ctx.after_request(environ, response, started)
        outcome = response.status_code, response.bytes_out
        if keep_alive:
            return body.leftover, *outcome
        if body.failure is None and (not body.complete or body.has_leftover):
            self._linger()  # unread request bytes: closing now would reset the response away
        return None, *outcome

    def _app_failed(self, head: RequestHead, response: Response) -> None:
        error_log.exception("error handling %s from %s", _line(head), self._peer())
        self._fail_response(response)

    def _fail_response(self, response: Response) -> None:
        """A 500 if nothing was sent yet; otherwise the client just sees the connection close."""
        if not response.head_sent:
            response.status_code = 500
            self._send_quietly(error_reply(500))

    def _refuse(self, error: HttpError, sent: bool = False) -> None:
        """Answer a refused request, log it at info (no traceback), and close gracefully."""
        error_log.info("refused request from %s: %d %s", self._peer(), error.status, error.reason)
        if not sent:
            self._send_quietly(error_reply(error.status))
        self._linger()

    def _send_quietly(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def _linger(self) -> None:
        """Half-close and discard what the client still sends, so our reply is not lost to a RST."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(0.2))
            deadline = time.monotonic() + LINGER_SECONDS
            while time.monotonic() < deadline and self.sock.recv(65536):
                pass
        except OSError:
            pass

    def _peer(self) -> str:
        return f"{self.remote_addr}:{self.remote_port}" if self.remote_addr else "unix socket peer"


def _drainable(head: RequestHead, body: RequestBody) -> bool:
    """Can the unread rest of the body be read off cheaply after the response?"""
    if body.continue_pending or head.content_length is None:
        return False
    return head.content_length - body.received <= DRAIN_BUDGET


def _line(head: RequestHead) -> str:
    return (head.method + b" " + head.target[:200]).decode("latin-1")
