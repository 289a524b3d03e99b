"""The worker's loop: one epoll over its listeners and every connection not in the app.

The app runs on this thread between turns of the loop (``threads = 1``): after the events of a
turn, one ready request is run; with more waiting, the next turn polls without blocking so that
the reading and flushing of every other connection go on between app calls. A client that sends a
whole request and reads its answer at once costs ``epoll_wait``, ``recv`` and ``send`` (plus
``accept`` and ``close`` without keep-alive): a fresh connection is read as soon as it is
accepted. (The connection states are in :mod:`forkserve.worker.connection`.)

Accepting never hoards: a worker takes new connections only while it holds fewer than
``worker_connections``; with a ready request waiting it takes one per turn of its loop, and a burst
stops after a connection that brings a whole request, so it serves that before taking more (with
``EPOLLEXCLUSIVE`` the kernel wakes a waiting sibling for the rest). One per turn also keeps a
newcomer from waiting behind kept-alive clients when every worker is busy.

Stopping: every response then says ``Connection: close``; idle connections get a short grace for
a request already on its way; requests being read are finished. A server shutdown (``drain``)
first takes every connection still queued on the listeners — the master has stopped new ones
from entering the queue — and closes the listeners once they stay empty for ``DRAIN_SETTLE``.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import time
from typing import Any, Protocol

from forkserve.http.connection import RequestRunner
from forkserve.process import wakeup
from forkserve.process.scoreboard import NOT_ACCEPTING
from forkserve.worker.conn import APP, IDLE, INFINITY, STOP_GRACE, FrontSettings
from forkserve.worker.connection import Connections
from forkserve.worker.threads import AppThreads

error_log = logging.getLogger("forkserve.error")

TICK = 0.5  # seconds between heartbeats (the master replaces a worker whose heartbeat stops)
ACCEPT_BURST = 4  # connections taken per wake-up at most: siblings share a burst of arrivals
SIBLING_LOOK = 0.02  # seconds between looks at the siblings (connections held, idle threads) at most
ACCEPT_BACKOFF = 0.1  # seconds without accepting after running out of file descriptors
DRAIN_SETTLE = 0.1  # a draining worker closes its listeners once they stayed empty this long
ORPHAN_DRAIN = 1.0  # a worker whose master died takes queued connections for this long at most
_EPOLLIN = select.EPOLLIN


class Control(Protocol):
    """What the loop asks of its worker."""

    def should_stop(self) -> bool:
        """Must the worker stop taking requests (signal, recycling limit)?"""

    def drain_requested(self) -> bool:
        """Is this stop the server's shutdown (serve what is queued on the listeners first)?"""

    def tick(self) -> bool:
        """Twice a second: heartbeat, log reopening; False when the worker must exit now."""

    def sibling_has_spare_thread(self) -> bool:
        """Does another serving worker have an app thread with nothing to do?"""

    def fewest_connections_elsewhere(self) -> int:
        """The fewest connections another worker free to accept now holds (NOT_ACCEPTING: none)."""

    def report_held(self, connections: int) -> None:
        """How many connections this worker holds while it accepts (else NOT_ACCEPTING), for
        its siblings to read."""

    def report_connections(self, reading: int, idle: int, in_app: int, flushing: int) -> None:
        """Connection counts by state, for the scoreboard."""

class Front(Connections):
    """The loop of one worker. :meth:`serve` returns when the worker is done."""

    def __init__(
        self,
        settings: FrontSettings,
        listeners: dict[int, socket.socket],
        builders: dict[int, Any],
        runner: RequestRunner,
        control: Control,
        wakeup_fd: int,
        graceful_timeout: float,
        pool: AppThreads | None = None,
    ) -> None:
        super().__init__(settings, builders, runner)
        self.pool = pool
        self.listeners = listeners
        self.control = control
        self.graceful_timeout = graceful_timeout
        self.epoll = select.epoll()
        self.epoll.register(wakeup_fd, _EPOLLIN)
        if pool is not None:
            self.epoll.register(pool.read_fd, _EPOLLIN)
        self.watching = False  # are the listeners registered?
        self.listener_kinds: dict[int, tuple[int, int, int]] = {}
        self.accept_paused_until = 0.0
        self.sibling_look_at = 0.0  # when to look again whether a sibling has an idle app thread
        self.sibling_has_room = False  # (with app threads: a sibling has one idle)
        self.fewest_elsewhere = NOT_ACCEPTING  # the fewest connections a free sibling holds
        self.held_seen = 0  # connections held at the last look for an emptier sibling
        self.held_look_at = 0.0  # when to look again
        self.held_shown = -1  # what the scoreboard shows siblings (NOT_ACCEPTING while not accepting)
        self.yielding_to_fewer = False  # out of the accept queue for an emptier sibling, this turn
        self.draining = False
        self.stop_deadline = INFINITY
        self.drain_quiet_since = 0.0
        self.drained = 0  # connections taken off the listen queue while draining
        self.drain_until = INFINITY
        self.next_tick = 0.0

    # -- the loop ------------------------------------------------------------------------------

    def serve(self) -> None:
        """Run until the worker must stop and holds no connection, or must exit now."""
        try:
            self._loop()
        finally:
            for conn in list(self.conns.values()):
                self._close(conn)
            self._close_listeners()
            self.epoll.close()

    def _loop(self) -> None:
        epoll = self.epoll
        conns = self.conns
        ready = self.ready
        timers = self.timers
        pool = self.pool
        pool_fd = pool.read_fd if pool is not None else -1
        while True:
            now = self.now
            if now >= self.next_tick:
                self.next_tick = now + TICK
                if not self.control.tick():
                    return
                self._publish_counts()
            if not self.stopping and self.control.should_stop():
                self._begin_stop(now)
            if self.stopping and not self._still_working(now):
                return
            self._sync()
            if ready and (pool is None or pool.free):
                timeout = 0.0
            else:
                timeout = self.next_tick - now
                if timers and timers[0][0] - now < timeout:
                    timeout = max(timers[0][0] - now, 0.0)
                if self.draining and self.listeners:
                    timeout = min(timeout, DRAIN_SETTLE)
                elif self.yielding_to_fewer:  # look again soon: the sibling may have filled up
                    timeout = min(timeout, max(self.held_look_at - now, 0.0))
            events = epoll.poll(timeout)
            self.now = time.monotonic()
            for fd, mask in events:
                conn = conns.get(fd)
                if conn is not None:
                    try:
                        self._on_event(conn, mask)
                    except Exception:  # noqa: BLE001 -- a bug costs one connection, not the worker's others
                        error_log.exception("internal error on the connection of %s; closing it", conn.peer)
                        self._close(conn)
                elif fd == pool_fd:
                    for conn, outcome in pool.finished():  # type: ignore[union-attr]
                        self._complete(conn, outcome)
                elif fd in self.listeners:
                    # With requests waiting, one newcomer per turn: never a burst hoarded from
                    # idle siblings (the kernel wakes those first), never a newcomer starved behind
                    # kept-alive clients when every worker is busy.
                    self._accept(fd, ACCEPT_BURST if not ready else 1)
                else:
                    wakeup.drain(fd)
            if timers and timers[0][0] <= self.now:
                self._expire()
            if ready:
                if pool is None:
                    self._run(ready.popleft())
                else:
                    self._hand_over(pool)

    def _hand_over(self, pool: AppThreads) -> None:
        """Give ready requests to free app threads, in arrival order."""
        ready = self.ready
        while ready and pool.free:
            conn = ready.popleft()
            if conn.closed:
                continue
            self._set_state(conn, APP, 0)
            self.begun += 1
            pool.hand(conn)

    def _still_working(self, now: float) -> bool:
        """While stopping: is there anything left to do before the worker may exit?"""
        if now >= self.stop_deadline:
            if self.conns:
                error_log.warning("worker stopping: closing %d connection(s) at the graceful timeout",
                                  len(self.conns))
            return False
        if self.draining and self.listeners and now >= self.drain_until:
            self._close_listeners()  # (an orphan's drain is bounded: arrivals may never stop)
        if self.draining and self.listeners:
            if not self.drain_quiet_since and not self.ready:
                for fd in list(self.listeners):
                    self._accept(fd)  # until the queue answers "empty" (EAGAIN)
            if self.drain_quiet_since and now - self.drain_quiet_since >= DRAIN_SETTLE:
                self._close_listeners()
                if self.drained:
                    error_log.info("worker %d served %d queued connection(s) before exiting",
                                   self.pid, self.drained)
            else:
                return True
        return bool(self.conns)

    def _yield_to_siblings(self, held: int) -> bool:
        """Leave new connections to a sibling, for now? (Out of the listeners' wait queue, the
        kernel wakes a sibling for each arrival instead.) Two cases, read from the scoreboard
        when this worker's connection count has grown, and every SIBLING_LOOK seconds otherwise:

        - a sibling that accepts holds clearly fewer connections (fewer than three quarters of
          this worker's, or none while this one holds one). Keep-alive clients stay where they
          connected: without this, connections opened while every worker waits all wake the
          first worker in the listener's wait queue, two arriving together both land on the
          one that woke first, and a fleet serves on one core what it could on all of them
          (nginx's upstream keep-alive connections, a benchmark's clients);
        - with app threads: every thread here is busy, requests already wait for one, and a
          sibling has a thread to spare. What this worker accepted would only queue behind its
          own waiting requests, and a worker the adaptive count just started would get none.

        Never while draining (the queue is everyone's to empty). The first case keeps showing
        the worker's count (it would accept were it not for the sibling), the second shows it as
        not accepting, so two workers never yield to each other for longer than a stale look:
        a worker that yields wakes every SIBLING_LOOK to look again. When no sibling qualifies
        it accepts as before: nobody is starved."""
        if self.draining:
            return False
        now = self.now
        if held > self.held_seen or (held and now >= self.held_look_at):
            self.held_look_at = now + SIBLING_LOOK
            self.fewest_elsewhere = self.control.fewest_connections_elsewhere()
        self.held_seen = held
        if held and self.fewest_elsewhere < held - held // 4:
            self.yielding_to_fewer = True
            return True
        pool = self.pool
        if pool is None or pool.free or not self.ready:
            return False
        if now >= self.sibling_look_at:
            self.sibling_look_at = now + SIBLING_LOOK
            self.sibling_has_room = self.control.sibling_has_spare_thread()
        return self.sibling_has_room

    def _sync(self) -> None:
        """Bring epoll's interest lists in line with what the loop wants now, and show the
        siblings how many connections this worker holds (NOT_ACCEPTING when it takes none)."""
        held = len(self.conns)
        self.yielding_to_fewer = False
        want_listeners = bool(self.listeners) and (not self.stopping or self.draining) and (
            held < self.settings.worker_connections
        ) and self.now >= self.accept_paused_until and not self._yield_to_siblings(held)
        if want_listeners != self.watching:
            self.watching = want_listeners
            for fd in self.listeners:
                if want_listeners:
                    self.epoll.register(fd, _EPOLLIN | select.EPOLLEXCLUSIVE)
                else:
                    self.epoll.unregister(fd)
        shown = held if want_listeners or self.yielding_to_fewer else NOT_ACCEPTING
        if shown != self.held_shown:
            self.held_shown = shown
            self.control.report_held(shown)
        if self.unscheduled:
            self._schedule()
        if self.dirty:
            epoll = self.epoll
            for conn in self.dirty:
                if conn.closed or conn.want == conn.mask:
                    continue
                if conn.registered:
                    epoll.modify(conn.fd, conn.want)
                else:
                    epoll.register(conn.fd, conn.want)
                    conn.registered = True
                conn.mask = conn.want
            self.dirty.clear()

    # -- connection states ---------------------------------------------------------------------

    def _report_counts(self, reading: int, idle: int, in_app: int, flushing: int) -> None:
        self.control.report_connections(reading, idle, in_app, flushing)

    def _accept(self, listener_fd: int, burst: int = ACCEPT_BURST) -> None:
        listener = self.listeners[listener_fd]
        family, kind, proto = self._socket_kinds(listener_fd)
        limit = self.settings.worker_connections
        for _ in range(burst):
            if len(self.conns) >= limit:
                return
            try:
                # socket.accept() without its wrapper, which converts the listener's family and
                # type to enums for every connection (3-4 µs of a Connection: close request).
                fd, peer = listener._accept()
            except BlockingIOError:
                if self.draining and not self.drain_quiet_since:
                    self.drain_quiet_since = self.now
                return
            except OSError as error:
                if error.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    continue
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    error_log.error("accept failed: %s; pausing for %gs", error.strerror, ACCEPT_BACKOFF)
                    self.accept_paused_until = self.now + ACCEPT_BACKOFF
                    return
                raise
            try:
                sock = socket.socket(family, kind, proto, fd)
            except OSError:  # (it was closed under us: nothing to serve)
                os.close(fd)
                continue
            if self.draining:
                self.drain_quiet_since = 0.0
                self.drained += 1
            self._open(sock, peer, listener_fd)
            if self.ready or self._yield_to_siblings(len(self.conns)):
                return  # serve the request it brought before taking more; share with siblings

    def _socket_kinds(self, listener_fd: int) -> tuple[int, int, int]:
        """A listener's (family, type, protocol) as plain ints, looked up once."""
        kinds = self.listener_kinds.get(listener_fd)
        if kinds is None:
            listener = self.listeners[listener_fd]
            kinds = self.listener_kinds[listener_fd] = (int(listener.family), int(listener.type), listener.proto)
        return kinds

    def _begin_stop(self, now: float) -> None:
        self.stopping = True
        self.stop_deadline = now + max(self.graceful_timeout - 1.0, 0.0)
        self.draining = bool(self.listeners) and self.control.drain_requested()
        self.drain_until = now + ORPHAN_DRAIN if getattr(self.control, "orphaned", False) else INFINITY
        if self.draining:
            self.drain_quiet_since = 0.0
            for fd in list(self.listeners):
                self._accept(fd)  # whatever is queued already, and learn whether anything is
        else:
            self._close_listeners()
        for conn in list(self.conns.values()):
            if conn.state == IDLE:
                self._arm(conn, now + STOP_GRACE)

    def _close_listeners(self) -> None:
        """Our copies of the listening sockets go (the master's and the siblings' stay theirs)."""
        if self.watching:
            for fd in self.listeners:
                self.epoll.unregister(fd)
            self.watching = False
        for sock in self.listeners.values():
            sock.close()
        self.listeners = {}
