"""The master: binds, forks, supervises. It never touches a request.

Signal handlers only append the signal to a queue; ``signal.set_wakeup_fd`` wakes the main loop,
which does the work. So the loop can be driven in tests by queueing signals directly, and no log
line is ever written from inside a handler.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forkserve import __version__, logs
from forkserve.cli import EXIT_BOOT_FAILED, EXIT_OK
from forkserve.config import Config
from forkserve.loader import AppLoadError, load_app, prepare_import_path
from forkserve.logs import error_log
from forkserve.metrics import Telemetry, unasked_exit_reason
from forkserve.proctitle import set_title
from forkserve.scoreboard import Scoreboard, State
from forkserve.sockets import BindError, Listener, create_listeners, describe, systemd_fds
from forkserve.stats import StatsServer, open_stats_server
from forkserve.worker import EXIT_BOOT_FAILED as WORKER_BOOT_FAILED
from forkserve.worker import Worker

EXIT_BIND_FAILED = 1
LOOP_TICK = 1.0
FAST_SHUTDOWN_GRACE = 2.0
MIN_SCOREBOARD_SLOTS = 256
HANDLED_SIGNALS = ("SIGHUP", "SIGTERM", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTTIN", "SIGTTOU",
                   "SIGWINCH", "SIGCHLD")


@dataclass
class WorkerRecord:
    """The master's view of one worker process."""

    pid: int
    slot: int
    spawned_at: float
    stop_sent_at: float | None = None
    kill_sent: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Arbiter:
    """The master process. ``run()`` returns the exit code."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.listeners: list[Listener] = []
        self.workers: dict[int, WorkerRecord] = {}
        self.signal_queue: list[int] = []
        self.target_workers = config.workers
        self.app: Callable[..., Any] | None = None
        self.exit_code = EXIT_OK
        self.stopping: str | None = None
        self.pid = os.getpid()
        self.scoreboard: Scoreboard | None = None
        self.booted_one = False
        self.boot_failure: str | None = None
        # Other fds the main loop waits on, each with the callback to run when it is ready
        # (the stats endpoint registers its sockets here). Callbacks must not block.
        self.extra_readers: dict[int, Callable[[], None]] = {}
        self.extra_writers: dict[int, Callable[[], None]] = {}
        self.telemetry = Telemetry()  # restarts, draining, loop tick: see forkserve.metrics
        self.stats_server: StatsServer | None = None

    # -- start ---------------------------------------------------------------------------------

    def run(self) -> int:
        """Start, supervise until told to stop, shut down; return the exit code."""
        self._call_hook("on_starting", self)
        try:
            prepare_import_path(self.config)
        except AppLoadError as error:
            error_log.error("%s", error)
            return EXIT_BOOT_FAILED
        try:
            self.listeners = create_listeners(
                self.config.bind,
                self.config.backlog,
                umask=self.config.umask,
                reuse_port=self.config.reuse_port,
                header_timeout=self.config.header_timeout,
                io_timeout=self.config.body_timeout,
                inherited=systemd_fds(os.environ),
            )
            self.stats_server = open_stats_server(
                self.config.stats_bind, self, self.extra_readers, self.extra_writers, self.config.umask
            )
        except BindError as error:
            error_log.error("%s", error)
            for listener in self.listeners:
                listener.close()
            return EXIT_BIND_FAILED
        try:
            return self._serve()
        finally:
            for listener in self.listeners:
                listener.close()
            if self.stats_server is not None:
                self.stats_server.close()
            self._call_hook("on_exit", self)

    def _serve(self) -> int:
        if self.config.preload_app:
            try:
                self.app = load_app(self.config.wsgi_app)
            except AppLoadError as error:
                error_log.error("failed to load the app: %s", error)
                return EXIT_BOOT_FAILED
        self.scoreboard = Scoreboard(max(MIN_SCOREBOARD_SLOTS, self.target_workers * 4))
        self.control_read, self.control_write = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.control_read.setblocking(False)
        self._install_signals()
        set_title(f"master [{self.config.app_name}]")
        error_log.info("forkserve %s starting (master pid %d)", __version__, self.pid)
        for listener in self.listeners:
            error_log.info("listening at %s", describe(listener))
        if self.stats_server is not None:
            error_log.info("stats at %s (/metrics /stats /healthz /readyz)", self.stats_server.address)
        error_log.info(
            "%d workers (%s)", self.target_workers, self.config.sources.get("workers", "default")
        )
        self._spawn_missing()
        self._call_hook("when_ready", self)
        self._main_loop()
        self._shutdown()
        return self.exit_code

    def _install_signals(self) -> None:
        self.wakeup_read, self.wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wakeup_write, warn_on_full_buffer=False)
        for name in HANDLED_SIGNALS:
            signal.signal(getattr(signal, name), self._record_signal)

    def _record_signal(self, signum: int, frame: Any) -> None:
        """The whole signal handler: remember the signal; the main loop acts on it."""
        self.signal_queue.append(signum)

    # -- the loop ------------------------------------------------------------------------------

    def _main_loop(self) -> None:
        while self.stopping is None:
            self.handle_signals()
            self.reap()
            self._read_control()
            if self.stopping is not None:
                break
            self._spawn_missing()
            self._wait(LOOP_TICK)

    def _wait(self, timeout: float) -> None:
        """Sleep until a signal, a control message, an extra fd, or the timeout."""
        self.telemetry.tick()
        try:
            ready, writable, _ = select.select(
                [self.wakeup_read, self.control_read, *self.extra_readers], [*self.extra_writers], [], timeout
            )
        except InterruptedError:
            return
        if self.wakeup_read in ready:
            try:
                while os.read(self.wakeup_read, 512):
                    pass
            except BlockingIOError:
                pass
        self._run_extra(ready, self.extra_readers)
        self._run_extra(writable, self.extra_writers)

    def _run_extra(self, ready: list[Any], callbacks: dict[int, Callable[[], None]]) -> None:
        for fd in ready:
            callback = callbacks.get(fd)
            if callback is None:
                continue
            try:
                callback()
            except Exception:  # noqa: BLE001 -- a helper's bug must not take the master down
                error_log.exception("error handling fd %d in the master loop", fd)
                callbacks.pop(fd, None)

    def handle_signals(self) -> None:
        """Act on every queued signal, in arrival order."""
        while self.signal_queue:
            signum = self.signal_queue.pop(0)
            name = signal.Signals(signum).name
            handler = getattr(self, f"_on_{name.lower()}", None)
            if handler is not None:
                handler()

    def _on_sigterm(self) -> None:
        error_log.info("TERM received: graceful shutdown")
        self.stopping = "graceful"

    def _on_sigint(self) -> None:
        error_log.info("%s received: fast shutdown", "INT")
        self.stopping = "fast"

    def _on_sigquit(self) -> None:
        error_log.info("%s received: fast shutdown", "QUIT")
        self.stopping = "fast"

    def _on_sigchld(self) -> None:
        pass  # reaping happens on every loop turn

    def _on_sigusr1(self) -> None:
        logs.reopen()
        self._signal_workers(signal.SIGUSR1)

    def _on_sigttin(self) -> None:
        self._set_target(self.target_workers + 1)

    def _on_sigttou(self) -> None:
        if self.target_workers > 1:
            self._set_target(self.target_workers - 1)
            self._retire_extra()

    def _set_target(self, count: int) -> None:
        old, self.target_workers = self.target_workers, count
        error_log.info("worker count %d -> %d", old, count)
        self._call_hook("nworkers_changed", self, count, old)

    # -- workers -------------------------------------------------------------------------------

    def _spawn_missing(self) -> None:
        live = [record for record in self.workers.values() if record.stop_sent_at is None]
        for _ in range(self.target_workers - len(live)):
            self.spawn_worker()

    def spawn_worker(self) -> WorkerRecord:
        """Fork one worker into a free scoreboard slot."""
        assert self.scoreboard is not None
        index = self.scoreboard.free_slot()
        self.scoreboard.claim(index, 0)
        worker = Worker(
            self.config, self.listeners, self.scoreboard, index, self.control_write, self.app, self
        )
        self._call_hook("pre_fork", self, worker)
        pid = os.fork()
        if pid == 0:
            self._become_worker()
            worker.run()  # never returns
        self.scoreboard.set_pid(index, pid)
        self.telemetry.worker_spawned(index)
        record = WorkerRecord(pid=pid, slot=index, spawned_at=time.monotonic())
        self.workers[pid] = record
        error_log.info("booting worker %d", pid)
        return record

    def _become_worker(self) -> None:
        """In the child right after fork: drop the master's signal plumbing."""
        signal.set_wakeup_fd(-1)
        for fd in (self.wakeup_read, self.wakeup_write):
            os.close(fd)
        self.control_read.close()
        if self.stats_server is not None:
            self.stats_server.close(in_child=True)
        self.signal_queue.clear()

    def _retire_extra(self) -> None:
        """Stop the oldest workers beyond the target count, gracefully."""
        live = sorted(
            (record for record in self.workers.values() if record.stop_sent_at is None),
            key=lambda record: record.spawned_at,
        )
        for record in live[: max(0, len(live) - self.target_workers)]:
            self._stop_worker(record, signal.SIGTERM)

    def _stop_worker(self, record: WorkerRecord, signum: int) -> None:
        record.stop_sent_at = time.monotonic()
        self._kill(record.pid, signum)

    def _signal_workers(self, signum: int) -> None:
        for pid in list(self.workers):
            self._kill(pid, signum)

    def _kill(self, pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def reap(self) -> None:
        """Collect every exited worker, log why it ended, free its slot."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            record = self.workers.pop(pid, None)
            if record is None:
                continue  # not ours (e.g. we are PID 1 in a container)
            assert self.scoreboard is not None
            booted = self.scoreboard.read(record.slot).state not in (State.BOOTING, State.EMPTY)
            self.scoreboard.release(record.slot)
            self._log_exit(record, status)
            boot_failed = os.WIFEXITED(status) and os.WEXITSTATUS(status) == WORKER_BOOT_FAILED
            if record.stop_sent_at is None and self.stopping is None and not boot_failed:
                self.telemetry.record_restart(unasked_exit_reason(status))
            self._call_hook("child_exit", self, record)
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == WORKER_BOOT_FAILED and not booted:
                self._read_control()
                if self.stopping is None:
                    error_log.error("worker failed to boot: %s", (self.boot_failure or "see above").rstrip())
                    error_log.error("shutting down: the app cannot be loaded")
                    self.exit_code = EXIT_BOOT_FAILED
                    self.stopping = "fast"

    def _log_exit(self, record: WorkerRecord, status: int) -> None:
        if os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
            level = error_log.info if record.stop_sent_at is not None else error_log.error
            level("worker %d was killed by %s", record.pid, name)
        else:
            code = os.WEXITSTATUS(status)
            if code == 0:
                error_log.info("worker %d exited", record.pid)
            elif code != WORKER_BOOT_FAILED:
                error_log.error("worker %d exited with code %d", record.pid, code)

    def _read_control(self) -> None:
        """Messages workers send the master (boot failures)."""
        while True:
            try:
                payload = self.control_read.recv(262144)
            except (BlockingIOError, InterruptedError):
                return
            try:
                message = json.loads(payload)
            except ValueError:
                continue
            if message.get("event") == "boot_failed" and self.boot_failure is None:
                self.boot_failure = message.get("message", "")

    # -- stop ----------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop every worker: TERM and wait graceful_timeout, or QUIT and a short grace; then KILL."""
        graceful = self.stopping == "graceful"
        signum = signal.SIGTERM if graceful else signal.SIGQUIT
        grace = self.config.graceful_timeout if graceful else FAST_SHUTDOWN_GRACE
        for record in self.workers.values():
            self._stop_worker(record, signum)
        deadline = time.monotonic() + grace
        while self.workers and time.monotonic() < deadline:
            self.reap()
            if self.workers:
                self._wait(min(0.1, max(0.0, deadline - time.monotonic())))
                self.signal_queue.clear()
        for pid in list(self.workers):
            error_log.warning("worker %d did not stop in time; killing it", pid)
            self._kill(pid, signal.SIGKILL)
        while self.workers:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            record = self.workers.pop(pid, None)
            if record is not None:
                self._log_exit(record, status)
        error_log.info("master %d exiting", self.pid)

    # -- hooks ---------------------------------------------------------------------------------

    def _call_hook(self, name: str, *args: Any) -> None:
        hook = self.config.hook(name)
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:  # noqa: BLE001 -- a user hook must never take the master down
            error_log.exception("hook %s raised; carrying on", name)

