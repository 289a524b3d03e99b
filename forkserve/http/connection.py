"""One request through the app: environ, hooks, the app call, the response, and what went wrong.

The worker's loop hands over a *ready* request — its head checked and, with request buffering,
its whole body read — and gets back whether the connection may carry another request. Nothing
here reads from the client unless buffering is off (then ``wsgi.input`` streams from the socket);
the response goes to the connection's :class:`~forkserve.http.response.Sink`.

Queue time — how long the request waited before the app saw it — is the wait from its arrival
(the kernel's receive stamp of its bytes, else when the loop saw it complete) to the app call;
when a trusted peer (``forwarded_allow_ips``) sends ``X-Request-Start`` (``t=`` seconds,
milliseconds or microseconds since the epoch, as nginx, Heroku and New Relic write it), the wait
since that stamp counts too, and the larger of the two is the request's queue time: the proxy's
includes the time before forkserve had the bytes, ours never suffers from a proxy clock that runs
ahead. With ``max_queue_time`` set, a request that already waited longer is answered 503 with
``Retry-After`` instead of reaching the app (shed): its client has most likely given up.

Errors become answers, never a dead worker: a refused request (a bad body, contradictory proxy
headers) gets its 4xx and a close; an app that raises, or breaks the WSGI contract before
anything was sent, gets a 500 (after that the client just sees the connection close); a client
that went away is logged at debug level.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from forkserve.http import accesslog
from forkserve.http.body import RequestBody
from forkserve.http.environ import EnvironBuilder
from forkserve.http.errors import ClientDisconnected, HttpError, error_reply
from forkserve.http.head import RequestHead
from forkserve.http.protocols import Slot
from forkserve.http.response import AppError, Response, Sink
from forkserve.http.waiting import ClientWaits

error_log = logging.getLogger("forkserve.error")

DRAIN_BUDGET = 256 * 1024  # unread body bytes read off after the response to keep the connection
REQUEST_LINE_ROOM = 90
QUEUE_TIME_KEY = accesslog.QUEUE_TIME_KEY  # seconds the ready request waited for the app
CONNECTION_KEY = "forkserve.connection"  # "<worker pid>.<serial>": which connection it came on
PROXY_QUEUE_TIME_KEY = "forkserve.proxy_queue_time"  # seconds since a trusted X-Request-Start
SHED_KEY = "forkserve.shed"  # True on a request answered 503 by max_queue_time
REQUEST_START = "HTTP_X_REQUEST_START"
_STAMP = re.compile(r"(?:t=)?\s*(\d{9,19}(?:\.\d+)?)")
MAX_PROXY_WAIT = 86400.0  # a stamp further back than a day is not a stamp of this request


def proxy_wait(header: str, now: float) -> float | None:
    """Seconds since an ``X-Request-Start`` stamp: ``t=`` and seconds (with a fraction),
    milliseconds, microseconds or nanoseconds since the epoch, told apart by magnitude; None when
    the header holds no plausible stamp (garbage, in the future, or more than a day old)."""
    match = _STAMP.match(header.strip())
    if match is None:
        return None
    stamp = float(match.group(1))
    while stamp > 1e11:  # milliseconds, microseconds, nanoseconds -> seconds
        stamp /= 1000.0
    wait = now - stamp
    return wait if 0.0 <= wait <= MAX_PROXY_WAIT else (0.0 if -1.0 < wait < 0.0 else None)


class ReadyRequest(Protocol):
    """What the loop knows of a request it hands over (a worker's connection)."""

    head: RequestHead
    builder: EnvironBuilder
    remote_addr: str
    remote_port: str
    sink: Sink
    wsgi_input: Any
    streaming: RequestBody | None  # wsgi.input when buffering is off
    transport: Any  # TLS and PROXY state (forkserve.worker.transport), or None: plain
    connection_id: str  # "<worker pid>.<the connection's serial number in that worker>"
    head_at: float  # wall-clock time the head was complete
    ready_at: float  # wall-clock time the request (and its body) was ready for the app


class Outcome:
    """How an exchange ended, for the loop: keep the connection, and what came after it."""

    __slots__ = ("keep_alive", "leftover", "linger", "queue_time", "sent", "status")

    def __init__(self, keep_alive: bool, leftover: bytes, linger: bool, status: int, sent: int) -> None:
        self.keep_alive = keep_alive
        self.leftover = leftover  # bytes received after this request (pipelined), when kept
        self.linger = linger  # request bytes may still be on their way: half-close and read them off
        self.status = status
        self.sent = sent
        self.queue_time = 0.0  # the request's queue time, the proxy's stamp considered


class RequestRunner:
    """Runs ready requests, one at a time, for one worker. Built once per worker."""

    def __init__(
        self,
        app: Callable[..., Any],
        slot: Slot,
        keepalive: bool,
        use_sendfile: bool,
        should_stop: Callable[[], bool],
        before_request: Callable[[dict[str, Any], Response, str], None] | None = None,
        after_request: Callable[[dict[str, Any], Response, float], None] | None = None,
        max_queue_time: float = 0.0,
    ) -> None:
        self.app = app
        self.slot = slot
        self.waits = ClientWaits(slot)
        self.keepalive = keepalive
        self.use_sendfile = use_sendfile
        self.should_stop = should_stop
        self.before_request = before_request
        self.after_request = after_request
        self.max_queue_time = max_queue_time
        self.retry_after = str(max(1, math.ceil(max_queue_time)))
        # The scoreboard's slot also keeps the worst recent queue time and counts shed requests;
        # other slots (tests, the in-process benchmark) need not.
        self.note_queue_time: Callable[[float], None] | None = getattr(slot, "queued", None)
        self.count_shed: Callable[[], None] | None = getattr(slot, "shed", None)

    def run(self, request: ReadyRequest) -> Outcome:
        """The app call for one request, its response into the request's sink."""
        head = request.head
        started = time.time()
        line = head.method + b" " + head.target[:REQUEST_LINE_ROOM]
        self.slot.begin(started, line)
        self.waits.start_request(started, line)
        queue_time = max(0.0, started - request.ready_at)
        outcome = None
        try:
            outcome = self._exchange(request, head, queue_time, started)
            return outcome
        finally:
            if outcome is not None:
                status, sent, queue_time = outcome.status, outcome.sent, outcome.queue_time
            else:
                status, sent = 0, 0
            self.slot.idle(time.time(), started, status, sent, queue_time)

    def _exchange(self, request: ReadyRequest, head: RequestHead, queue_time: float, started: float) -> Outcome:
        sink = request.sink
        streaming = request.streaming
        try:
            environ = request.builder.build(head, request.remote_addr, request.remote_port, request.wsgi_input)
        except HttpError as error:  # e.g. contradictory scheme headers from a trusted proxy
            self._refuse(request, error)
            outcome = Outcome(False, b"", True, error.status, 0)
            outcome.queue_time = queue_time
            return outcome
        stamp = environ.get(REQUEST_START)
        if stamp is not None and request.builder.proxy.trusts(request.remote_addr):
            waited = proxy_wait(stamp, started)
            if waited is not None:
                environ[PROXY_QUEUE_TIME_KEY] = waited
                queue_time = max(queue_time, waited)
        environ[QUEUE_TIME_KEY] = queue_time
        environ[CONNECTION_KEY] = request.connection_id
        transport = request.transport
        if transport is not None and transport.environ:
            environ.update(transport.environ)  # HTTPS, the client certificate (TLS)
        if self.note_queue_time is not None:
            self.note_queue_time(queue_time)
        app = self.app
        if self.max_queue_time and queue_time > self.max_queue_time:
            app = self._shed
            environ[SHED_KEY] = True
            if self.count_shed is not None:
                self.count_shed()

        def decide_keep_alive() -> bool:
            return (
                head.keep_alive
                and not head.must_close
                and self.keepalive
                and (streaming is None or (streaming.failure is None
                                           and (streaming.complete or _drainable(head, streaming))))
                and not self.should_stop()
            )

        response = Response(sink, head.method == b"HEAD", head.version == b"1.1", decide_keep_alive,
                            self.use_sendfile)
        keep_alive = False
        linger = False
        try:
            if self.before_request is not None:
                self.before_request(environ, response, request.remote_addr)
            result = app(environ, response.start_response)
            try:
                response.finish(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            keep_alive = response.keep_alive
        except ClientDisconnected as error:
            error_log.debug("client %s went away during %s: %s", _peer(request), _line(head), error)
        except HttpError as error:
            if streaming is not None and error is streaming.failure:
                if not response.head_sent:
                    response.status_code = error.status
                self._refuse(request, error, sent=response.head_sent)
                linger = True
            else:
                self._app_failed(request, head, response)
        except AppError as error:
            error_log.error("%s: %s", _line(head), error)
            self._fail_response(sink, response)
        except Exception:  # noqa: BLE001 -- any app error becomes a 500; the worker keeps serving
            self._app_failed(request, head, response)
        leftover = b""
        if streaming is not None:
            if keep_alive and not streaming.complete:
                keep_alive = streaming.drain(DRAIN_BUDGET)
            if keep_alive:
                leftover = streaming.leftover
            elif streaming.failure is None and not streaming.complete:
                linger = True  # unread request bytes: closing now would reset the response away
        if self.after_request is not None:
            self.after_request(environ, response, request.head_at)
        outcome = Outcome(keep_alive, leftover, linger, response.status_code, response.bytes_out)
        outcome.queue_time = queue_time
        return outcome

    def _shed(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """The answer in the app's place to a request that waited past max_queue_time."""
        body = b"503 Service Unavailable: the server is overloaded; retry later\n"
        start_response("503 Service Unavailable", [
            ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
            ("Retry-After", self.retry_after), ("Connection", "close"),
        ])
        return [body]

    def _app_failed(self, request: ReadyRequest, head: RequestHead, response: Response) -> None:
        error_log.exception("error handling %s from %s", _line(head), _peer(request))
        self._fail_response(request.sink, response)

    @staticmethod
    def _fail_response(sink: Sink, response: Response) -> None:
        """A 500 if nothing was sent yet; otherwise the client just sees the connection close."""
        if not response.head_sent:
            response.status_code = 500
            send_quietly(sink, error_reply(500))

    @staticmethod
    def _refuse(request: ReadyRequest, error: HttpError, sent: bool = False) -> None:
        log_refusal(_peer(request), error)
        if not sent:
            send_quietly(request.sink, error_reply(error.status))


def log_refusal(peer: str, error: HttpError) -> None:
    """A refused request is the client's error: one info line, no traceback."""
    error_log.info("refused request from %s: %d %s", peer, error.status, error.reason)


def send_quietly(sink: Sink, data: bytes) -> None:
    try:
        sink.send(data)
    except ClientDisconnected:
        pass


def _drainable(head: RequestHead, body: RequestBody) -> bool:
    """Can the unread rest of the body be read off cheaply after the response?"""
    if body.continue_pending or head.content_length is None:
        return False
    return head.content_length - body.received <= DRAIN_BUDGET


def _peer(request: ReadyRequest) -> str:
    return f"{request.remote_addr}:{request.remote_port}" if request.remote_addr else "unix socket peer"


def _line(head: RequestHead) -> str:
    return (head.method + b" " + head.target[:200]).decode("latin-1")
