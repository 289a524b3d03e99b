"""The worker process: load the app, run the I/O front (forkserve.worker.front), report, obey.

A worker runs in a forked child of the master. It loads the app (unless the master preloaded
it), then hands over to its loop: one epoll over the shared listening sockets (EPOLLEXCLUSIVE,
so one new connection wakes one waiting worker, not all) and every connection it holds, with
the app called for one complete request at a time. Its scoreboard slot shows the request in the
app, the heartbeat, and how many connections it holds in each state.

Signals: TERM stops taking requests and finishes those in hand (serving what is queued on the
listening sockets first when the master marked the stop as the server's shutdown); INT and QUIT
abandon the request and exit at once; USR1 reopens the log files;
:data:`~forkserve.process.stackdump.TIMEOUT_SIGNAL` (from the master's timeout) dumps every thread's
stack to the error log, runs ``worker_abort`` and ends the request with a 500. A signal sent
before the worker's handlers exist waits for them (the master forks with these signals
blocked), and the abort a handler raises is raised once at most and never into the worker's exit
path (see ``Worker._abort_once``).

Recycling: ahead of its request budget (``max_requests`` + its own jitter; see
:func:`~forkserve.worker.recycling.request_notice`) a worker asks the master for a replacement over the
control channel and keeps serving until the master, once the replacement is ready, sends TERM; so
capacity normally never dips. The budget is a hard limit all the same: the request that reaches
it is answered with ``Connection: close`` and the worker takes no other, whether or not its
replacement is ready. ``max_worker_lifetime`` is the same hard deadline in time. Over
``max_worker_memory`` it finishes the response in hand and exits at once (and says so, so the
master forks the replacement now).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, NoReturn

from forkserve.http.response import Response
from forkserve.process import logs, privileges, stackdump
from forkserve.process.exits import EXIT_BOOT_FAILED, EXIT_FAILURE, EXIT_OK
from forkserve.process.hooks import HookRequest, PassesThroughHooks, call_hook
from forkserve.process.loader import AppLoadError, load_app
from forkserve.process.logs import error_log
from forkserve.process.proctitle import set_title
from forkserve.process.scoreboard import Scoreboard
from forkserve.process.sockets import Listener
from forkserve.settings.registry import Config
from forkserve.worker import monitor, reloader
from forkserve.worker.assembly import build_front
from forkserve.worker.front import Front
from forkserve.worker.recycling import MB, NO_LIMIT, RssProbe, request_limit, request_notice
from forkserve.worker.threads import AppThreads

INFINITY = float("inf")
OUTPUT_CAP = 4 * 1024 * 1024  # response bytes a connection may keep for the loop to flush
IGNORED_SIGNALS = ("SIGHUP", "SIGUSR2", "SIGWINCH", "SIGTTIN", "SIGTTOU")
# Signals a worker acts on: blocked from fork until its handlers are in place (signals_held).
HELD_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1,
                          stackdump.TIMEOUT_SIGNAL, stackdump.STACKS_SIGNAL})


class WorkerAbort(BaseException):
    """Raised from the INT/QUIT handler to abandon whatever the worker is doing, even in the app."""


class WorkerTimeout(PassesThroughHooks):
    """Raised in the app when the master times the request out. An Exception on purpose: the
    connection layer turns it into a 500 for the client (unless the app swallows it, in which
    case the master's SIGKILL follows). A hook cannot swallow it (PassesThroughHooks)."""


class Worker:
    """One worker process's whole life. ``run`` never returns: it ends with ``os._exit``."""

    def __init__(
        self,
        config: Config,
        listeners: list[Listener],
        scoreboard: Scoreboard,
        slot_index: int,
        control: socket.socket,
        app: Callable[..., Any] | None,
        server: Any = None,
        thread_slots: list[int] | None = None,
    ) -> None:
        self.config = self.cfg = config  # ``cfg``: the name gunicorn's hooks use
        self.log = error_log  # and ``log``: they log through it
        self.listeners = listeners
        self.scoreboard = scoreboard
        self.slot = scoreboard.writer(slot_index)
        self.slot_index = slot_index
        self.orphaned = False  # its master is gone
        self.thread_slots = thread_slots or []  # with threads > 1: one scoreboard slot per app thread
        self.front: Front | None = None
        self.pool: AppThreads | None = None
        self.local = threading.local()  # per app thread: the request the hooks see
        self.control = control
        self.app = app
        self.server = server
        self.pid = 0
        self.ppid = 0
        self.stopping = False
        self.stop_requested_at = 0.0
        self.reopen_requested = False
        self.request_limit = NO_LIMIT
        self.request_notice = NO_LIMIT  # ask for a replacement after this many requests
        self.end_of_life = INFINITY  # time.monotonic() past which no new request is taken
        self.memory_limit = config.max_worker_memory * MB
        self.rss: RssProbe | None = None
        self.booted_at = time.time()
        self.abortable = False  # may INT/QUIT/timeout raise into the code running now? (_abort_once)
        self.stacks_fd: int | None = None  # the master's file for 'ctl stacks' (set before the fork)

    @property
    def alive(self) -> bool:
        """gunicorn's ``worker.alive``: False once the worker is on its way out."""
        return not self.stopping

    # -- life --------------------------------------------------------------------------------

    def run(self) -> NoReturn:
        """Entry point in the child after fork. Never returns, whatever happens: it ends with
        ``os._exit``, so a worker can never fall back into the master's code it was forked from
        (which would remove the master's pid file and socket files on its way out)."""
        code = EXIT_FAILURE
        try:
            code = self._live()
        finally:
            self._exit(code)

    def _live(self) -> int:
        """The worker's life; its exit code. Raises nothing (see :meth:`_abort_once`): the only
        exceptions the signal handlers raise are raised while ``abortable``, and that ends in the
        inner ``finally`` (or in the handler itself) before any ``except`` clause here runs."""
        try:
            try:
                self.abortable = True
                return self._run()
            finally:
                self.abortable = False
        except WorkerAbort:
            return EXIT_OK
        except WorkerTimeout:
            error_log.warning("worker %d: timed out outside a request; exiting", os.getpid())
            return EXIT_FAILURE
        except SystemExit as error:
            return error.code if isinstance(error.code, int) else EXIT_FAILURE
        except BaseException:  # noqa: BLE001 -- last stop before os._exit: log whatever it was
            error_log.exception("worker %d crashed", os.getpid())
            return EXIT_FAILURE

    def _exit(self, code: int) -> NoReturn:
        """The exit path: no signal handler raises here any more (``abortable`` is False)."""
        try:
            call_hook(self.config, "worker_exit", self.server, self)
            for handler in error_log.handlers + logs.access_log.handlers:
                with suppress(OSError, ValueError):
                    handler.flush()
            flush_stdio()
        finally:
            os._exit(code)

    def _run(self) -> int:
        self.pid = os.getpid()
        self.ppid = os.getppid()
        self._install_signals()
        set_title(f"worker [{self.config.app_name}]")
        call_hook(self.config, "post_fork", self.server, self)
        try:  # process model: give up root before the app's code runs
            privileges.drop(privileges.resolve(self.config))
        except privileges.PrivilegeError as error:
            self._report_boot_failure(str(error))
            return EXIT_BOOT_FAILED
        if self.app is None:
            try:
                self.app = load_app(self.config.wsgi_app)
            except AppLoadError as error:
                # --reload: show the error and wait for a fix instead of stopping the server
                self.app = reloader.app_for_load_error(error) if self.config.reload else None
                if self.app is None:
                    self._report_boot_failure(str(error))
                    return EXIT_BOOT_FAILED
            except WorkerAbort:
                raise  # INT/QUIT while importing: an abandoned boot, not a failed one
            except BaseException:  # noqa: BLE001 -- e.g. SystemExit from the app's import
                self._report_boot_failure(traceback.format_exc())
                return EXIT_BOOT_FAILED
        call_hook(self.config, "post_worker_init", self)
        self.request_limit = request_limit(self.config.max_requests, self.config.max_requests_jitter)
        self.request_notice = request_notice(self.request_limit)
        if self.memory_limit:
            self.rss = RssProbe()
        try:
            front = self._front()
        except (OSError, ValueError, TypeError) as error:  # e.g. a TLS certificate that will not load
            self._report_boot_failure(f"cannot set up serving: {error}")
            return EXIT_BOOT_FAILED
        now = time.time()
        for index in self.thread_slots:
            self.scoreboard.writer(index).ready(now)
        if self.pool is not None:
            self.pool.start()
        self.slot.ready(now)
        self._tell_master({"event": "ready"})
        monitor.start(self)  # process title from the scoreboard, --reload watch
        error_log.debug("worker %d ready", self.pid)
        front.serve()
        for listener in self.listeners:
            listener.close(remove_path=False)  # the socket file is the master's to remove
        self.slot.stopping()
        return EXIT_OK

    def _report_boot_failure(self, message: str) -> None:
        """Tell the master why we cannot serve; it logs this once and stops instead of respawning."""
        if not self._tell_master({"event": "boot_failed", "message": message[:200_000]}):
            error_log.error("worker failed to load the app: %s", message)

    def _tell_master(self, message: dict[str, Any]) -> bool:
        """One datagram on the control channel; never blocks. False if it could not be sent."""
        message["pid"] = self.pid or os.getpid()
        try:
            self.control.send(json.dumps(message).encode(), socket.MSG_DONTWAIT)
        except OSError:
            return False
        return True

    # -- signals -----------------------------------------------------------------------------

    def _install_signals(self) -> None:
        """Our handlers, then let the signals in: the master forked us with them blocked
        (:func:`signals_held`), so one sent while we booted waits for these handlers instead of
        reaching the master's, inherited, and being lost."""
        self.wakeup_read, self.wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wakeup_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_quit)
        signal.signal(signal.SIGQUIT, self._on_quit)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        signal.signal(stackdump.TIMEOUT_SIGNAL, self._on_timeout)
        for name in IGNORED_SIGNALS:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if not self.thread_slots:  # (app threads: the timed-out thread's stack is logged alone)
            stackdump.install()  # after the Python handler: the stack dump chains to it
        else:
            stackdump.install_crash_dump()
        if self.stacks_fd is not None:
            stackdump.install_stacks(self.stacks_fd)  # ctl stacks: every thread's stack, on demand
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)  # what came meanwhile runs now

    def _on_term(self, signum: int, frame: Any) -> None:
        if not self.stopping:
            self.stop_requested_at = time.monotonic()
        self.stopping = True

    def _on_quit(self, signum: int, frame: Any) -> None:
        self.stopping = True
        self._abort_once("worker_int", WorkerAbort())

    def _on_usr1(self, signum: int, frame: Any) -> None:
        self.reopen_requested = True

    def _on_timeout(self, signum: int, frame: Any) -> None:
        """The master timed a request out. With one thread, faulthandler has already dumped
        every stack: the request in the app is abandoned (500) and the worker stops. With app
        threads, only the marked threads' requests are: their stacks logged, each interrupted."""
        if self.pool is not None:
            self.pool.abort_marked(WorkerTimeout, lambda: call_hook(self.config, "worker_abort", self))
            return
        self.stopping = True
        self._abort_once("worker_abort", WorkerTimeout("request timed out; aborted by the master"))

    def _abort_once(self, hook: str, error: BaseException) -> None:
        """Run ``hook`` and raise ``error`` in whatever the worker is doing, unless the worker is
        already on its way out (then stopping is enough).

        Raising from a signal handler is safe only where something catches it. So a handler
        raises only while ``abortable``, and clears it *before* it runs the hook and raises: at
        most one abort is ever raised, a second INT/QUIT/timeout during the hook or during the
        exit that follows does nothing, and the exit path (``_live``'s except clauses,
        ``_exit``) can never be interrupted by an exception it does not expect.
        """
        if not self.abortable:
            return
        self.abortable = False
        call_hook(self.config, hook, self)
        raise error

    # -- serving -----------------------------------------------------------------------------

    def _front(self) -> Front:
        """The loop, and the runner(s) it hands ready requests to, built once per worker."""
        self.front = front = build_front(self, OUTPUT_CAP)
        self.pool = front.pool
        return front

    # -- what the loop asks of the worker (forkserve.front.Control) ----------------------------

    def drain_requested(self) -> bool:
        return self.orphaned or self.slot.drain_requested()

    def tick(self) -> bool:
        """Twice a second from the loop: heartbeat, log reopening, an orphaned worker's exit."""
        self.slot.heartbeat(time.time())
        if self.reopen_requested:
            self._reopen_logs()
        if os.getppid() != self.ppid and not self.stopping:
            # The master was killed: nobody supervises this worker any more. It stops taking
            # connections and finishes the requests it holds (graceful_timeout at most), rather
            # than dropping them.
            error_log.warning("worker %d: master went away; finishing the requests in hand (and the "
                              "connections queued for it), then exiting", self.pid)
            # Nobody else may serve the listen queue: drain it for a moment, as at a shutdown (not
            # closing the door with a socket filter: a USR2 successor could share these sockets).
            self.orphaned = True
            self.stopping = True
        return True

    def report_connections(self, reading: int, idle: int, in_app: int, flushing: int) -> None:
        self.slot.connections(reading, idle, in_app, flushing)

    def sibling_has_spare_thread(self) -> bool:
        return self.scoreboard.idle_thread_elsewhere(self.slot_index)

    def fewest_connections_elsewhere(self) -> int:
        return self.scoreboard.fewest_held_elsewhere(self.slot_index)

    def report_held(self, connections: int) -> None:
        self.slot.held(connections)

    def should_stop(self) -> bool:
        """True when the connection in hand must be the last (stop asked, or a recycling limit
        reached). Checked per request, with the request in hand counted, so the budget holds on
        a long keep-alive connection too."""
        if self.stopping:
            return True
        begun = self.front.begun if self.front is not None else 0
        if begun >= self.request_notice:
            self._ask_for_replacement(begun)
        if begun >= self.request_limit or (
            self.end_of_life != INFINITY and time.monotonic() >= self.end_of_life
        ):
            self._limit_reached(begun)
        return self.stopping

    def _ask_for_replacement(self, begun: int) -> None:
        """Ahead of the limit: the master forks the replacement now and stops us once it is up."""
        self.request_notice = NO_LIMIT
        error_log.info(
            "worker %d is near max_requests (%d of its limit %d); asking for a replacement",
            self.pid, begun, self.request_limit,
        )
        if not self._tell_master({"event": "retire", "reason": f"max_requests ({begun} of {self.request_limit})"}):
            self.stopping = True  # no master to hand over to: just go

    def _limit_reached(self, begun: int) -> None:
        """At the limit: this request is the last, whether or not the replacement is ready."""
        if self.stopping:
            return
        self.stopping = True
        if begun >= self.request_limit:
            error_log.info("worker %d reached max_requests (%d served, its limit %d); exiting",
                           self.pid, begun, self.request_limit)
            reason = f"max_requests ({begun} served)"
        else:
            error_log.info("worker %d reached the end of its max_worker_lifetime; exiting", self.pid)
            reason = "max_worker_lifetime"
        self._tell_master({"event": "retire", "reason": reason, "exiting": True})

    @property
    def current_request(self) -> HookRequest | None:
        """The request the pre/post_request hooks see: the calling app thread's own."""
        return getattr(self.local, "request", None)

    @current_request.setter
    def current_request(self, request: HookRequest | None) -> None:
        self.local.request = request

    def before_request(self, environ: dict[str, Any], response: Response, peer: str) -> None:
        self.current_request = HookRequest(environ)
        call_hook(self.config, "pre_request", self, self.current_request)

    def after_request(self, environ: dict[str, Any], response: Response, started: float) -> None:
        if self.config.hook("post_request") is not None:
            request = self.current_request
            if request is None or request.environ is not environ:
                request = HookRequest(environ)
            call_hook(self.config, "post_request", self, request, environ, response)
        self.current_request = None
        if self.rss is not None:
            rss = self.rss.rss_bytes()
            if rss > self.memory_limit:
                self._memory_exceeded(rss)

    def _memory_exceeded(self, rss: int) -> None:
        """Finish the response in hand (already sent) and exit; the master starts a replacement."""
        if self.stopping:
            return
        self.stopping = True
        self.rss = None
        error_log.warning(
            "worker %d: resident memory %.1f MB is over max_worker_memory %d MB after %d requests; "
            "exiting", self.pid, rss / MB, self.config.max_worker_memory, self.slot.requests,
        )
        self._tell_master({"event": "retire", "reason": f"max_worker_memory ({rss / MB:.1f} MB)",
                           "exiting": True})

    def _reopen_logs(self) -> None:
        self.reopen_requested = False
        stackdump.reopen_logs(timeout_dump=not self.thread_slots)
        error_log.info("worker %d reopened its log files", self.pid)


@contextmanager
def signals_held() -> Iterator[None]:
    """In the master, around ``os.fork()`` of a worker: block the signals a worker acts on.

    The child leaves the block with them still blocked and unblocks them once its own handlers
    are installed (``Worker._install_signals``); a signal sent to it in between (logrotate's
    USR1, a shutdown's TERM or QUIT) is kept pending by the kernel instead of running the
    master's inherited handler in the child, where it would be lost. The master gets its mask
    back on leaving, and with it whatever signal reached it meanwhile.
    """
    master = os.getpid()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        if os.getpid() == master:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def flush_stdio() -> None:
    """Flush Python's stdio buffers (before os._exit drops them)."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
