"""The sync worker: accept on the shared sockets, serve one connection at a time, report, obey.

A worker runs in a forked child of the master. It loads the app (unless the master preloaded
it), then loops: wait on the listening sockets (epoll with EPOLLEXCLUSIVE, so one new connection
wakes one worker, not all), accept, serve the connection to its end, and write its state to its
scoreboard slot. Signals: TERM finishes the current request and exits; INT and QUIT abandon it
and exit at once; USR1 reopens the log files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from forkserve import logs
from forkserve.accesslog import after_request_hook
from forkserve.config import Config
from forkserve.http.connection import Connection, ServeContext
from forkserve.http.head import HeadLimits
from forkserve.loader import AppLoadError, load_app
from forkserve.logs import error_log
from forkserve.proctitle import set_title
from forkserve.proxy import ProxyTrust
from forkserve.requestid import before_request_hook
from forkserve.scoreboard import Scoreboard
from forkserve.sockets import Listener
from forkserve.wsgi import EnvironBuilder, ErrorStream

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BOOT_FAILED = 3

IDLE_TICK = 1.0


class WorkerAbort(BaseException):
    """Raised from the INT/QUIT handler to abandon whatever the worker is doing, even in the app."""


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
    ) -> None:
        self.config = config
        self.listeners = listeners
        self.slot = scoreboard.writer(slot_index)
        self.slot_index = slot_index
        self.control = control
        self.app = app
        self.server = server
        self.pid = 0
        self.ppid = 0
        self.stopping = False
        self.reopen_requested = False
        self.max_requests = config.max_requests
        self.booted_at = time.time()

    # -- life --------------------------------------------------------------------------------

    def run(self) -> None:
        """Entry point in the child after fork."""
        code = EXIT_ERROR
        try:
            code = self._run()
        except WorkerAbort:
            code = EXIT_OK
        except SystemExit as error:
            code = error.code if isinstance(error.code, int) else EXIT_ERROR
        except BaseException:  # noqa: BLE001 -- last stop before os._exit: log whatever it was
            error_log.exception("worker %d crashed", os.getpid())
        finally:
            self._call_hook("worker_exit", self.server, self)
            for handler in error_log.handlers + logs.access_log.handlers:
                with contextlib.suppress(OSError, ValueError):
                    handler.flush()
            os._exit(code)

    def _run(self) -> int:
        self.pid = os.getpid()
        self.ppid = os.getppid()
        self._install_signals()
        set_title(f"worker [{self.config.app_name}]")
        self._call_hook("post_fork", self.server, self)
        if self.app is None:
            try:
                self.app = load_app(self.config.wsgi_app)
            except AppLoadError as error:
                self._report_boot_failure(str(error))
                return EXIT_BOOT_FAILED
            except BaseException:  # noqa: BLE001 -- e.g. SystemExit from the app's import
                self._report_boot_failure(traceback.format_exc())
                return EXIT_BOOT_FAILED
        self._call_hook("post_worker_init", self)
        context = self._serve_context()
        self.slot.ready(time.time())
        error_log.debug("worker %d ready", self.pid)
        self._loop(context)
        return EXIT_OK

    def _report_boot_failure(self, message: str) -> None:
        """Tell the master why we cannot serve; it logs this once and stops instead of respawning."""
        payload = json.dumps({"pid": os.getpid(), "event": "boot_failed", "message": message})
        try:
            self.control.send(payload.encode()[:200_000])
        except OSError:
            error_log.error("worker failed to load the app: %s", message)

    def _install_signals(self) -> None:
        self.wakeup_read, self.wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wakeup_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_quit)
        signal.signal(signal.SIGQUIT, self._on_quit)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        for name in ("SIGHUP", "SIGUSR2", "SIGWINCH", "SIGTTIN", "SIGTTOU"):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def _on_term(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _on_quit(self, signum: int, frame: Any) -> None:
        self.stopping = True
        self._call_hook("worker_int", self)
        raise WorkerAbort()

    def _on_usr1(self, signum: int, frame: Any) -> None:
        self.reopen_requested = True

    # -- serving -----------------------------------------------------------------------------

    def _serve_context(self) -> ServeContext:
        config = self.config
        proxy = ProxyTrust(config.forwarded_allow_ips, config.secure_scheme_headers)
        errors = ErrorStream()
        builders = {
            listener.fileno(): EnvironBuilder(listener, proxy, config.header_map, errors)
            for listener in self.listeners
        }
        return ServeContext(
            app=self.app,  # type: ignore[arg-type]
            limits=HeadLimits.from_config(config),
            body_limit=config.limit_request_body,
            body_timeout=config.body_timeout,
            header_timeout=config.header_timeout,
            keepalive=config.keepalive,
            slot=self.slot,
            builders=builders,
            listener_fds=[listener.fileno() for listener in self.listeners],
            wakeup_fd=self.wakeup_read,
            should_stop=self.should_stop,
            use_sendfile=config.sendfile,
            before_request=before_request_hook(config.request_id_header, proxy),
            after_request=after_request_hook(config.access_log_format, logs.access_log),
        )

    def should_stop(self) -> bool:
        """True when the connection in hand must be the last (stop asked, or recycling due)."""
        return self.stopping or (0 < self.max_requests <= self.slot.requests + 1)

    def _loop(self, context: ServeContext) -> None:
        poller = select.epoll()
        sockets = {listener.fileno(): listener.sock for listener in self.listeners}
        for fd in sockets:
            poller.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        poller.register(self.wakeup_read, select.EPOLLIN)
        while not self.stopping:
            events = poller.poll(IDLE_TICK)
            self.slot.heartbeat(time.time())
            for fd, _ in events:
                if fd == self.wakeup_read:
                    self._drain_wakeup()
                elif not self.stopping:
                    self._accept_all(sockets[fd], fd, context)
            if self.reopen_requested:
                self.reopen_requested = False
                logs.reopen()
            if os.getppid() != self.ppid:
                error_log.warning("worker %d: master went away; exiting", self.pid)
                break
            if self.max_requests and self.slot.requests >= self.max_requests:
                error_log.info("worker %d: served %d requests; recycling", self.pid, self.slot.requests)
                break
        self.slot.stopping()
        poller.close()

    def _accept_all(self, listener: socket.socket, fd: int, context: ServeContext) -> None:
        """Serve every connection waiting on this listener (accept until EAGAIN)."""
        while not self.stopping:
            try:
                sock, peer = listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    continue
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    error_log.error("accept failed: %s", error.strerror)
                    time.sleep(0.1)
                    return
                raise
            Connection(context, sock, peer, fd).serve()
            if 0 < self.max_requests <= self.slot.requests:
                return

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self.wakeup_read, 512):
                pass
        except BlockingIOError:
            pass

    # -- hooks -------------------------------------------------------------------------------

    def _call_hook(self, name: str, *args: Any) -> None:
        hook = self.config.hook(name)
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:  # noqa: BLE001 -- a user hook must never kill the worker
            error_log.exception("hook %s raised", name)
        sys.stdout.flush()
