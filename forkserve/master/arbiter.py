"""The master: binds, forks, supervises. It never touches a request.

Signal handlers only append the signal to a queue; ``signal.set_wakeup_fd`` wakes the main loop,
which does the work. So the loop can be driven in tests by queueing signals directly
(``arbiter.signal_queue.append(signal.SIGTTIN); arbiter.handle_signals()``), and no log line is
ever written from inside a handler.

One loop pass: act on queued signals, reap exited workers, read worker messages (control
channel), then :meth:`Arbiter.manage` — timeouts, recycling, reload progress, respawns — and
sleep in :meth:`Arbiter.wait` until the next signal, message or tick. Other components may add
file descriptors to :attr:`Arbiter.extra_readers` (fd -> callback): the loop polls them too and
calls the callback when one is readable (e.g. a stats listener).

Workers belong to a *generation*: a HUP makes a new one, and the old generation is stopped only
once the new one is ready (all at once, or one worker at a time with ``reload_strategy =
"rolling"``). If the new workers cannot boot, the reload is abandoned and the old ones keep
serving; only at first start does a boot failure stop the master.

TERM with ``shutdown_delay`` set first *drains*: the master fails its readiness check (/readyz
answers 503, systemd hears STOPPING=1) and goes on supervising and serving normally for that
long, so a load balancer stops sending traffic before anything is refused; then it shuts down as
TERM does without the delay. A second TERM ends the wait (graceful shutdown now); INT or QUIT
stop fast as always.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from forkserve import __version__
from forkserve.master import pidfile, reload, systemd
from forkserve.master import upgrade as reexec
from forkserve.master.lifecycle import MasterLifecycle
from forkserve.master.watchdog import Overdue, RespawnBackoff, overdue, same_episode, stall_limit
from forkserve.process import logs, wakeup
from forkserve.process.exits import EXIT_BOOT_FAILED, EXIT_FAILURE, EXIT_OK
from forkserve.process.hooks import call_hook
from forkserve.process.loader import AppLoadError, prepare_import_path
from forkserve.process.logs import error_log
from forkserve.process.proctitle import set_title
from forkserve.process.scoreboard import Scoreboard, State
from forkserve.process.sockets import BindError, Listener, create_listeners, describe
from forkserve.process.stackdump import TIMEOUT_SIGNAL
from forkserve.settings.registry import Config
from forkserve.settings.resolve import UsageError
from forkserve.stats.metrics import Telemetry
from forkserve.worker.recycling import lifetime_limit, lifetime_notice
from forkserve.worker.worker import Worker, signals_held

if TYPE_CHECKING:
    from forkserve.stats.server import StatsServer

LOOP_TICK = 1.0
FAST_SHUTDOWN_GRACE = 2.0
TIMEOUT_KILL_GRACE = 2.0  # after the stack-dump signal, before SIGKILL
MIN_SCOREBOARD_SLOTS = 256
HANDLED_SIGNALS = ("SIGHUP", "SIGTERM", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTTIN", "SIGTTOU",
                   "SIGWINCH", "SIGCHLD")


@dataclass
class WorkerRecord:
    """The master's view of one worker process."""

    pid: int
    slot: int
    spawned_at: float
    generation: int = 0
    lifetime: float = float("inf")
    ready_at: float | None = None
    stop_sent_at: float | None = None
    abort_sent_at: float | None = None
    kill_sent: bool = False
    retiring: str | None = None  # why it is being replaced (recycling)
    exiting: bool = False  # it announced it exits by itself
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def serving(self) -> bool:
        """Counts toward the worker target: not being stopped, not waiting for a replacement."""
        return self.stop_sent_at is None and self.retiring is None

    @property
    def expected_exit(self) -> bool:
        return self.stop_sent_at is not None or self.abort_sent_at is not None or self.exiting


@dataclass
class ReloadState:
    """A HUP in progress: the new generation, and what to go back to if it cannot boot."""

    generation: int
    strategy: str
    previous_config: Config
    previous_app: Callable[..., Any] | None
    previous_generation: int
    previous_target: int
    previous_cwd: str


def share_openssl() -> None:
    """Initialise OpenSSL once, in the master, so the workers share it copy-on-write.

    Nearly every web app imports ``hashlib`` (Django, Flask and their sessions, CSRF tokens,
    password hashers...), and its first import in a process sets up OpenSSL's providers and
    digest tables: about 2 MB of memory, private to every worker that imports it after the
    fork. Done here, it is done once and shared (measured: 2-3 MB less RSS per Flask or demo
    worker; about 1 MB more for an app that never hashes anything).
    """
    import hashlib  # noqa: F401 -- imported for its side effect, before the fork


class Arbiter:
    """The master process. ``run()`` returns the exit code."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.listeners: list[Listener] = []
        self.workers: dict[int, WorkerRecord] = {}
        self.signal_queue: list[int] = []
        self.extra_readers: dict[int, Callable[[], None]] = {}
        self.target_workers = config.workers
        self.app: Callable[..., Any] | None = None
        self.exit_code = EXIT_OK
        self.stopping: str | None = None
        self.paused = False
        self.pid = os.getpid()
        self.launch_cwd = os.getcwd()
        self.scoreboard: Scoreboard | None = None
        self.ever_ready = False
        self.boot_failures: dict[int, str] = {}
        self.last_boot_failure = ""
        self.generation = 0
        self._generations = itertools.count(1)
        self.reloading: ReloadState | None = None
        self.reload_again = False
        self.backoff = RespawnBackoff()
        self.preloaded = reload.PreloadedApp()
        self.stall = stall_limit(config)
        self.new_master_pid: int | None = None
        self.old_master_pid: int | None = None
        self.sockets_replace_binds = False  # systemd's sockets: a USR2 successor takes them as is
        self.lifecycle = MasterLifecycle(config)  # process model: pidfile, daemon, systemd, title
        # Like extra_readers: fds the loop waits on to become writable (stats replies).
        self.extra_writers: dict[int, Callable[[], None]] = {}
        self.telemetry = Telemetry()  # restarts, draining, loop tick: see forkserve.stats.metrics
        self.stats_server: StatsServer | None = None
        self.drain_ends_at: float | None = None  # TERM with shutdown_delay: when the wait is over
        self.new_master_ready_fd: int | None = None  # USR2: the successor says "ready" on this pipe
        self.old_master_ready_fd: int | None = None  # after USR2, in the successor: tell the old master

    # -- start ---------------------------------------------------------------------------------

    def run(self) -> int:
        """Start, supervise until told to stop, shut down; return the exit code."""
        call_hook(self.config, "on_starting", self)
        share_openssl()
        handover = reexec.handed_over(os.environ)
        self.old_master_pid = handover.old_master
        self.old_master_ready_fd = handover.ready_fd
        activated = systemd.take_listen_fds(os.environ)
        self.sockets_replace_binds = bool(activated) or handover.replaces_binds
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
                inherited=activated or (handover.fds if handover.replaces_binds else None),
                handed_over=handover.fds,
            )
            if self.config.stats_bind:  # imported only when used: workers need none of it
                from forkserve.stats.server import open_stats_server

                self.stats_server = open_stats_server(
                    self.config.stats_bind, self, self.extra_readers, self.extra_writers, self.config.umask,
                    handed_over=handover.stats_fd,
                )
                if self.stats_server is not None and self.stats_server.adopted:
                    self.stats_server.pause()  # the old master answers until our workers are up
            elif handover.stats_fd is not None:
                os.close(handover.stats_fd)  # stats_bind is no longer set
        except BindError as error:
            error_log.error("%s", error)
            for listener in self.listeners:
                listener.close()
            return EXIT_FAILURE
        code = EXIT_BOOT_FAILED
        try:
            started = self.lifecycle.started(self.listeners)  # daemon detach, pidfile, file owners
            self.pid = os.getpid()  # a daemon is a new process
            code = self._serve() if started is None else started
            return code
        finally:
            upgrading = self.new_master_pid is not None  # it uses our unix socket files now
            for listener in self.listeners:
                listener.close(remove_path=not upgrading)
            if self.stats_server is not None:
                self.stats_server.close(keep_path=upgrading)
            self._hand_pidfile_to_new_master()
            call_hook(self.config, "on_exit", self)
            self.lifecycle.finished(code)  # pidfile removed if still ours, a waiting daemon launcher told

    def _serve(self) -> int:
        if self.config.preload_app:
            try:
                self.app = self.preloaded.load(self.config.wsgi_app)
            except AppLoadError as error:
                error_log.error("failed to load the app: %s", error)
                return EXIT_BOOT_FAILED
        self.prepare()
        self.install_signal_handlers()
        set_title(f"master [{self.config.app_name}]")
        error_log.info("forkserve %s starting (master pid %d)", __version__, self.pid)
        if self.old_master_pid is not None:
            error_log.info("upgrade: took over the listening sockets of master %d", self.old_master_pid)
        for listener in self.listeners:
            error_log.info("listening at %s", describe(listener))
        if self.stats_server is not None:
            error_log.info("stats at %s (/metrics /stats /healthz /readyz)", self.stats_server.address)
        error_log.info(
            "%d workers (%s)", self.target_workers, self.config.sources.get("workers", "default")
        )
        self.spawn_missing()
        call_hook(self.config, "when_ready", self)
        self._main_loop()
        self._shutdown()
        return self.exit_code

    def prepare(self) -> None:
        """The shared scoreboard, the control channel and the wake-up pipe (no signal handlers:
        tests drive a prepared arbiter by queueing signals themselves)."""
        self.scoreboard = Scoreboard(max(MIN_SCOREBOARD_SLOTS, self.target_workers * 4))
        self.control_read, self.control_write = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.control_read.setblocking(False)
        self.wakeup_read, self.wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def install_signal_handlers(self) -> None:
        signal.set_wakeup_fd(self.wakeup_write, warn_on_full_buffer=False)
        for name in HANDLED_SIGNALS:
            signal.signal(getattr(signal, name), self._record_signal)

    def _record_signal(self, signum: int, frame: Any) -> None:
        """The whole signal handler: remember the signal; the main loop acts on it."""
        self.signal_queue.append(signum)

    # -- the pidfile across a USR2 upgrade ------------------------------------------------------

    def _hand_pidfile_to_new_master(self) -> None:
        """At exit after USR2: the pid file names the new master, so there is no moment without one.

        (MasterLifecycle writes the file — PIDFILE.2 while an old master still runs — and promotes
        it once the old master is gone.)
        """
        path = self.lifecycle.pidfile_path
        if self.new_master_pid is not None and path and pidfile.read(path) == os.getpid():
            pidfile.write(path, self.new_master_pid)

    # -- the loop ------------------------------------------------------------------------------

    def _main_loop(self) -> None:
        while self.stopping is None:
            self.handle_signals()
            self._check_drain_over()
            self.reap()
            self.read_control()
            if self.stopping is not None:
                break
            self.manage()
            self.wait(self._next_wakeup())

    def wait(self, timeout: float) -> None:
        """Sleep until a signal, a control message, an extra reader or writer, or the timeout."""
        self.telemetry.tick()
        poller = select.poll()
        for fd in (self.wakeup_read, self.control_read.fileno(), *self.extra_readers):
            poller.register(fd, select.POLLIN)
        for fd in self.extra_writers:  # (a stats client is never in both dicts)
            poller.register(fd, select.POLLOUT)
        try:
            events = poller.poll(max(0.0, timeout) * 1000)
        except InterruptedError:
            return
        for fd, mask in events:
            if fd == self.wakeup_read:
                wakeup.drain(self.wakeup_read)
            else:
                for callbacks in (self.extra_readers, self.extra_writers):
                    if fd in callbacks:
                        self._run_extra(fd, mask, callbacks)

    def _run_extra(self, fd: int, mask: int, callbacks: dict[int, Callable[[], None]]) -> None:
        if mask & select.POLLNVAL:
            error_log.error("extra fd %d is not open; dropping it", fd)
            del callbacks[fd]
            return
        try:
            callbacks[fd]()
        except Exception:  # noqa: BLE001 -- a failing component must not stop supervision
            error_log.exception("callback for fd %d raised; dropping it", fd)
            callbacks.pop(fd, None)

    def _next_wakeup(self) -> float:
        now = time.monotonic()
        timeout = LOOP_TICK
        backoff = self.backoff.wait_left(now)
        if backoff > 0:
            timeout = min(timeout, backoff)
        for record in self.workers.values():
            if record.abort_sent_at is not None and not record.kill_sent:
                timeout = min(timeout, record.abort_sent_at + TIMEOUT_KILL_GRACE - now)
        if self.drain_ends_at is not None:
            timeout = min(timeout, self.drain_ends_at - now)
        return max(0.01, timeout)

    def handle_signals(self) -> None:
        """Act on every queued signal, in arrival order."""
        while self.signal_queue:
            signum = self.signal_queue.pop(0)
            name = signal.Signals(signum).name
            handler = getattr(self, f"_on_{name.lower()}", None)
            if handler is not None:
                handler()

    def manage(self) -> None:
        """Everything the master does between signals, in one pass."""
        now = time.monotonic()
        self._check_old_master()
        self._note_ready(now)
        self._check_timeouts(now)
        self._enforce_deadlines(now)
        self._check_lifetimes(now)
        if self.reloading is not None:
            self._advance_reload()
        self._stop_replaced_retirees()
        self.spawn_missing()
        self.lifecycle.tick(self)  # readiness (sd_notify, daemon launcher), master title, pidfile
        self._tell_old_master_when_ready()

    # -- signals -------------------------------------------------------------------------------

    def _on_sigterm(self) -> None:
        if self.drain_ends_at is not None:
            error_log.info("TERM received again during shutdown_delay: graceful shutdown now")
            self.stopping = "graceful"
        elif self.config.shutdown_delay > 0 and self.new_master_pid is None and self.old_master_pid is None:
            self._start_draining(self.config.shutdown_delay)
        else:
            # (During a USR2 upgrade the other master serves the same sockets: nothing to drain.)
            error_log.info("TERM received: graceful shutdown")
            self.stopping = "graceful"

    def _start_draining(self, delay: float) -> None:
        """TERM with shutdown_delay: not ready from now on, but serve on until the delay is over."""
        self.drain_ends_at = time.monotonic() + delay
        self.telemetry.draining = True  # /readyz: 503 "draining"
        self.lifecycle.stopping()  # sd_notify STOPPING=1
        error_log.info(
            "TERM received: draining for shutdown_delay (%gs): readiness fails, workers keep serving; "
            "then a graceful shutdown (TERM again: now; INT or QUIT: fast)", delay,
        )

    def _check_drain_over(self) -> None:
        if self.drain_ends_at is not None and self.stopping is None and time.monotonic() >= self.drain_ends_at:
            error_log.info("shutdown_delay is over: graceful shutdown")
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
        error_log.info("USR1 received: reopened the log files")
        self.lifecycle.logs_reopened()  # hand new log files to the workers' user before they reopen
        self._signal_workers(signal.SIGUSR1)

    def _on_sigttin(self) -> None:
        self._set_target(self.target_workers + 1)

    def _on_sigttou(self) -> None:
        if self.target_workers <= 1:
            error_log.info("TTOU received: already at 1 worker, the minimum")
            return
        self._set_target(self.target_workers - 1)
        self._retire_extra()

    def _on_sigwinch(self) -> None:
        error_log.info("WINCH received: stopping every worker gracefully; the master stays (HUP restarts them)")
        self.paused = True
        if self.reloading is not None:
            self._finish_reload()
        for record in self.workers.values():
            if record.stop_sent_at is None:
                self._stop_worker(record, signal.SIGTERM)

    def _on_sighup(self) -> None:
        if self._ignored_while_draining("HUP"):
            return
        self.start_reload()

    def _on_sigusr2(self) -> None:
        if self._ignored_while_draining("USR2"):
            return
        self.start_upgrade()

    def _ignored_while_draining(self, name: str) -> bool:
        """A reload or upgrade during shutdown_delay would restart what is about to stop."""
        if self.drain_ends_at is None:
            return False
        error_log.warning("%s ignored: the server is draining before its shutdown", name)
        return True

    def _set_target(self, count: int) -> None:
        old, self.target_workers = self.target_workers, count
        error_log.info("worker count %d -> %d", old, count)
        call_hook(self.config, "nworkers_changed", self, count, old)

    # -- workers -------------------------------------------------------------------------------

    def serving(self) -> list[WorkerRecord]:
        """Workers of the current generation that count toward the target."""
        return [record for record in self.workers.values()
                if record.serving and record.generation == self.generation]

    def spawn_missing(self) -> None:
        """Fork workers up to the target, unless paused, backing off, or in a rolling reload."""
        if self.paused or self.stopping is not None:
            return
        if self.reloading is not None and self.reloading.strategy == "rolling":
            return  # _advance_reload paces the spawns
        if self.backoff.wait_left(time.monotonic()) > 0:
            return
        for _ in range(self.target_workers - len(self.serving())):
            if self.spawn_worker() is None:
                return

    def spawn_worker(self) -> WorkerRecord | None:
        """Fork one worker into a free scoreboard slot (None if fork failed; it backs off)."""
        assert self.scoreboard is not None
        index = self.scoreboard.free_slot()
        self.scoreboard.claim(index, 0)
        lifetime = lifetime_limit(self.config.max_worker_lifetime, self.config.max_worker_lifetime_jitter)
        spawned_at = time.monotonic()
        worker = Worker(
            self.config, self.listeners, self.scoreboard, index, self.control_write, self.app, self
        )
        worker.end_of_life = spawned_at + lifetime  # monotonic time is the same in the child
        call_hook(self.config, "pre_fork", self, worker)
        try:
            with signals_held():  # the child gets them once its own handlers are in place
                pid = os.fork()
        except OSError as error:
            self.scoreboard.release(index)
            delay = self.backoff.worker_exited(0.0, time.monotonic())
            error_log.error("cannot fork a worker: %s; retrying in %.1fs", error.strerror, delay)
            return None
        if pid == 0:
            self._become_worker()
            worker.run()  # never returns
        self.scoreboard.set_pid(index, pid)
        self.telemetry.worker_spawned(index)
        record = WorkerRecord(
            pid=pid, slot=index, spawned_at=spawned_at, generation=self.generation, lifetime=lifetime,
        )
        self.workers[pid] = record
        error_log.info("booting worker %d", pid)
        return record

    def _become_worker(self) -> None:
        """In the child right after fork: drop the master's signal plumbing and extra readers."""
        signal.set_wakeup_fd(-1)
        fds = {self.wakeup_read, self.wakeup_write, *self.extra_readers, *self.extra_writers,
               self.old_master_ready_fd, self.new_master_ready_fd}
        if self.stats_server is not None:  # (not among the readers while paused)
            fds.add(self.stats_server.listener.fileno())
        for fd in fds - {None}:
            try:
                os.close(fd)
            except OSError:
                pass
        self.extra_readers.clear()
        self.extra_writers.clear()
        self.control_read.close()
        self.signal_queue.clear()

    def _retire_extra(self) -> None:
        """Stop workers beyond the target gracefully: idle ones first, oldest first."""
        assert self.scoreboard is not None
        scoreboard = self.scoreboard
        candidates = sorted(
            self.serving(),
            key=lambda record: (scoreboard.read(record.slot).state != State.IDLE, record.spawned_at),
        )
        for record in candidates[: max(0, len(candidates) - self.target_workers)]:
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

    def _note_ready(self, now: float) -> None:
        """Mark workers whose slot left BOOTING (the worker also sends 'ready' to wake us)."""
        assert self.scoreboard is not None
        for record in self.workers.values():
            if record.ready_at is None and self.scoreboard.read(record.slot).state in (
                State.IDLE, State.BUSY, State.STOPPING
            ):
                record.ready_at = now
                self.ever_ready = True

    # -- reaping -------------------------------------------------------------------------------

    def reap(self) -> None:
        """Collect every exited child, log why it ended, and react (respawn backoff, reload
        abort, or — at first start — stopping on a boot failure)."""
        self.read_control()  # a worker's last words (e.g. "retire, exiting") come before its exit
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.new_master_pid:
                self._new_master_exited(status)
                continue
            record = self.workers.pop(pid, None)
            if record is not None:
                self._worker_exited(record, status)

    def _worker_exited(self, record: WorkerRecord, status: int) -> None:
        assert self.scoreboard is not None
        now = time.monotonic()
        if record.ready_at is None and self.scoreboard.read(record.slot).state not in (
            State.BOOTING, State.EMPTY
        ):
            record.ready_at = now
        self.scoreboard.release(record.slot)
        boot_failed = (os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_BOOT_FAILED
                       and record.ready_at is None)
        self._log_exit(record, status, boot_failed)
        call_hook(self.config, "child_exit", self, record)
        if boot_failed:
            self.read_control()
        why = self.boot_failures.pop(record.pid, "")
        if self.stopping is not None:
            return
        reloading = self.reloading
        if (reloading is not None and record.generation == reloading.generation
                and record.ready_at is None and record.stop_sent_at is None):
            # Crashed, failed to load the app, or killed as stuck while booting: the new
            # configuration or code does not come up, so the old workers stay.
            reason = f"a new worker could not load the app:\n{why.rstrip()}" if why else (
                f"a new worker ended before it was ready ({describe_status(status)})"
            )
            self._abort_reload(reason)
            return
        if record.expected_exit:
            return
        if not boot_failed:
            self.telemetry.record_restart("crash")
        if boot_failed and not self.ever_ready:
            error_log.error("worker failed to boot: %s", (why or "see above").rstrip())
            error_log.error("shutting down: the app cannot be loaded")
            self.exit_code = EXIT_BOOT_FAILED
            self.stopping = "fast"
            return
        if boot_failed and why != self.last_boot_failure:
            error_log.error("worker failed to boot: %s", (why or "see above").rstrip())
            self.last_boot_failure = why
        delay = self.backoff.worker_exited(now - record.spawned_at, now)
        if delay:
            error_log.warning(
                "worker %d died %.1fs after it was started (%d in a row); waiting %.2fs before the next",
                record.pid, now - record.spawned_at, self.backoff.failures, delay,
            )

    def _log_exit(self, record: WorkerRecord, status: int, boot_failed: bool) -> None:
        expected = record.expected_exit or self.stopping is not None
        if os.WIFSIGNALED(status):
            level = error_log.info if expected else error_log.error
            level("worker %d was killed by %s", record.pid, describe_status(status))
        else:
            code = os.WEXITSTATUS(status)
            if code == 0:
                error_log.info("worker %d exited", record.pid)
            elif not boot_failed:
                error_log.error("worker %d exited with code %d", record.pid, code)

    def _new_master_exited(self, status: int) -> None:
        error_log.error(
            "the new master %d (USR2 upgrade) ended: %s; this master keeps serving",
            self.new_master_pid, describe_status(status),
        )
        self.new_master_pid = None
        self._forget_new_master_ready_fd()
        if self.stats_server is not None:
            self.stats_server.resume()
        if self.paused and self.stopping is None:
            error_log.info("starting workers again (they were stopped by WINCH for the upgrade)")
            self.paused = False

    def read_control(self) -> None:
        """Messages workers send the master: boot failures, readiness, retirement requests."""
        while True:
            try:
                payload = self.control_read.recv(262144)
            except (BlockingIOError, InterruptedError):
                return
            try:
                message = json.loads(payload)
            except ValueError:
                continue
            event, pid = message.get("event"), message.get("pid")
            if event == "boot_failed":
                self.boot_failures[pid] = message.get("message", "")
            elif event == "retire" and pid in self.workers:
                self.retire(self.workers[pid], str(message.get("reason", "")), bool(message.get("exiting")))

    # -- timeouts ------------------------------------------------------------------------------

    def _check_timeouts(self, now: float) -> None:
        """Abort workers stuck in the app past ``timeout``, or without a heartbeat while idle."""
        assert self.scoreboard is not None
        timeout = self.config.timeout
        if timeout <= 0:
            return
        wall = time.time()
        for record in list(self.workers.values()):
            if record.abort_sent_at is not None or record.kill_sent:
                continue
            view = self.scoreboard.read(record.slot)
            if view.pid != record.pid:
                continue
            stuck = overdue(view, wall, timeout, self.stall)
            if stuck is None or not same_episode(view, self.scoreboard.read(record.slot)):
                continue
            self._abort_worker(record, stuck, view.state)

    def _abort_worker(self, record: WorkerRecord, stuck: Overdue, state: State) -> None:
        record.abort_sent_at = time.monotonic()
        self.telemetry.record_restart("timeout")
        if stuck.kind == "busy":
            error_log.error(
                "worker %d timed out: '%s' has run %.1fs (timeout %gs); its stack follows, then it "
                "is replaced", record.pid, stuck.request_line, stuck.seconds, self.config.timeout,
            )
        else:
            error_log.error(
                "worker %d is stuck: no heartbeat for %.1fs while %s (limit %.0fs); its stack "
                "follows, then it is replaced", record.pid, stuck.seconds, state.name.lower(), self.stall,
            )
        self._kill(record.pid, TIMEOUT_SIGNAL)

    def _enforce_deadlines(self, now: float) -> None:
        """SIGKILL workers that outlived their stack-dump grace or their graceful_timeout."""
        for record in self.workers.values():
            if record.kill_sent:
                continue
            if record.abort_sent_at is not None and now - record.abort_sent_at > TIMEOUT_KILL_GRACE:
                error_log.warning("worker %d still running after its stack dump; killing it", record.pid)
            elif record.stop_sent_at is not None and now - record.stop_sent_at > self.config.graceful_timeout:
                error_log.warning(
                    "worker %d did not stop within graceful_timeout (%gs); killing it",
                    record.pid, self.config.graceful_timeout,
                )
            else:
                continue
            record.kill_sent = True
            self._kill(record.pid, signal.SIGKILL)

    # -- recycling -----------------------------------------------------------------------------

    def retire(self, record: WorkerRecord, reason: str, exiting: bool = False) -> None:
        """Replace a worker without losing capacity: its replacement is forked now; the worker
        itself is stopped once enough workers are ready (or it exits by itself if ``exiting``)."""
        if record.retiring is not None or record.stop_sent_at is not None:
            record.exiting = record.exiting or exiting  # reached its limit before it was replaced
            return
        record.retiring = reason or "recycled"
        record.exiting = exiting
        self.telemetry.record_restart(record.retiring)
        error_log.info(
            "worker %d is being recycled (%s); %s", record.pid, record.retiring,
            "it exits after its response" if exiting else "it stops once its replacement is ready",
        )

    def _check_lifetimes(self, now: float) -> None:
        for record in self.workers.values():
            if record.serving and now - record.spawned_at > lifetime_notice(record.lifetime):
                self.retire(record, f"max_worker_lifetime, {now - record.spawned_at:.0f}s old")

    def _stop_replaced_retirees(self) -> None:
        waiting = [record for record in self.workers.values()
                   if record.retiring is not None and not record.exiting and record.stop_sent_at is None]
        if not waiting:
            return
        ready = [record for record in self.serving() if record.ready_at is not None]
        if len(ready) < self.target_workers and not self.paused:
            return
        for record in waiting:
            error_log.info("stopping recycled worker %d: its replacement is ready", record.pid)
            self._stop_worker(record, signal.SIGTERM)

    # -- HUP -----------------------------------------------------------------------------------

    def start_reload(self) -> None:
        """Re-read the configuration (and re-import a preloaded app); begin replacing workers.

        Any failure here leaves everything as it was: the current workers keep serving.
        """
        if self.reloading is not None:
            error_log.info("HUP received during a reload: reloading again when this one completes")
            self.reload_again = True
            return
        error_log.info("HUP received: reloading the configuration and the app")
        self.lifecycle.reloading()  # sd_notify RELOADING=1; READY=1 again once all workers are up
        old = self.config
        try:
            new = reload.read_config(old.argv, self.launch_cwd)
        except UsageError as error:
            error_log.error("reload failed: %s; the current workers keep serving", error)
            return
        try:
            logs.setup(new)
        except (OSError, ValueError) as error:
            logs.setup(old)
            error_log.error("reload failed: cannot set up logging: %s; the current workers keep serving", error)
            return
        for warning in new.warnings:
            error_log.warning(warning)
        previous_cwd = os.getcwd()
        try:
            os.chdir(self.launch_cwd)  # a relative chdir/pythonpath means what it meant at start
            prepare_import_path(new)
            app = self.preloaded.load(new.wsgi_app) if new.preload_app else None
        except AppLoadError as error:
            os.chdir(previous_cwd)
            logs.setup(old)
            error_log.error("reload failed: %s; the current workers keep serving", error)
            return
        if not new.preload_app:
            self.preloaded.unload()  # workers import the app themselves, afresh
        reload.apply_raw_env(new)
        if new.bind != old.bind:
            error_log.warning("bind changed in the configuration: the listening sockets are kept; "
                              "use USR2 (upgrade) or a restart to change them")
        state = ReloadState(next(self._generations), new.reload_strategy, old, self.app,
                            self.generation, self.target_workers, previous_cwd)
        self.config, self.app, self.generation = new, app, state.generation
        self.stall = stall_limit(new)
        self.reloading = state
        self.paused = False
        if new.workers != old.workers:  # changed in the file; otherwise keep TTIN/TTOU's count
            self._set_target(new.workers)
        call_hook(new, "on_reload", self)
        error_log.info("reload: starting %d new workers (%s)", self.target_workers, new.reload_strategy)

    def _advance_reload(self) -> None:
        state = self.reloading
        assert state is not None
        new = self.serving()
        old = [record for record in self.workers.values()
               if record.generation != state.generation and record.stop_sent_at is None]
        if any(record.ready_at is None for record in new):
            return
        if state.strategy == "all":
            if len(new) >= self.target_workers:
                for record in old:
                    self._stop_worker(record, signal.SIGTERM)
                self._finish_reload()
            return
        if old and len(new) + len(old) > self.target_workers:
            oldest = min(old, key=lambda record: record.spawned_at)
            newest = max(new, key=lambda record: record.spawned_at)
            error_log.info("rolling reload: new worker %d is ready; stopping old worker %d (%d old left)",
                           newest.pid, oldest.pid, len(old) - 1)
            self._stop_worker(oldest, signal.SIGTERM)
        elif len(new) < self.target_workers:
            self.spawn_worker()
        elif not old:
            self._finish_reload()

    def _finish_reload(self) -> None:
        error_log.info("reload complete: %d workers run the new configuration", len(self.serving()))
        self.reloading = None
        if self.reload_again:
            self.reload_again = False
            self.signal_queue.append(signal.SIGHUP)

    def _abort_reload(self, why: str) -> None:
        """New workers cannot start: stop them, go back to the old configuration and app."""
        state = self.reloading
        assert state is not None
        self.reloading = None
        self.reload_again = False
        for record in self.workers.values():
            if record.generation == state.generation and record.stop_sent_at is None:
                self._stop_worker(record, signal.SIGTERM)
        self.config, self.app, self.generation = state.previous_config, state.previous_app, state.previous_generation
        try:
            os.chdir(state.previous_cwd)
        except OSError as error:
            error_log.error("cannot go back to %s: %s", state.previous_cwd, error.strerror)
        self.stall = stall_limit(self.config)
        if self.target_workers != state.previous_target:
            self._set_target(state.previous_target)
        try:
            logs.setup(self.config)
        except (OSError, ValueError) as error:
            error_log.error("cannot restore the previous logging: %s", error)
        error_log.error("reload failed: %s", why)
        error_log.error("reload abandoned: the previous workers keep serving")

    # -- USR2 ----------------------------------------------------------------------------------

    def start_upgrade(self) -> None:
        """Fork+exec a new master that inherits the listening sockets; keep serving meanwhile."""
        if self.new_master_pid is not None:
            error_log.warning("USR2 ignored: new master %d is already running", self.new_master_pid)
            return
        call_hook(self.config, "pre_exec", self)
        try:
            new_master = reexec.spawn_new_master(
                self.config.argv, [listener.fileno() for listener in self.listeners], self.launch_cwd,
                replaces_binds=self.sockets_replace_binds,
                stats_fd=self.stats_server.listener.fileno() if self.stats_server is not None else None,
            )
        except OSError as error:
            error_log.error("USR2: cannot start a new master: %s", error)
            return
        self.new_master_pid = new_master.pid
        self.new_master_ready_fd = new_master.ready_fd
        self.extra_readers[new_master.ready_fd] = self._on_new_master_ready
        error_log.info(
            "USR2 received: started new master %d with the listening sockets; this master keeps "
            "serving until WINCH / TERM", new_master.pid,
        )

    def _on_new_master_ready(self) -> None:
        """The successor's workers are all up (or it died before: end of file)."""
        assert self.new_master_ready_fd is not None
        try:
            said = os.read(self.new_master_ready_fd, 1)
        except BlockingIOError:
            return
        except OSError:
            said = b""
        self._forget_new_master_ready_fd()
        if not said:
            return  # it ended before it was ready; reaping says how
        if said == reexec.READY_WITH_STATS and self.stats_server is not None:
            self.stats_server.pause()
            error_log.info("new master %d is ready; it answers the stats endpoint from now on",
                           self.new_master_pid)
        else:
            error_log.info("new master %d is ready", self.new_master_pid)

    def _forget_new_master_ready_fd(self) -> None:
        fd, self.new_master_ready_fd = self.new_master_ready_fd, None
        if fd is not None:
            self.extra_readers.pop(fd, None)
            os.close(fd)

    def _tell_old_master_when_ready(self) -> None:
        """In a USR2 successor: once every worker is up (or the old master is gone), answer the
        stats endpoint and tell the old master, which stops answering it."""
        if self.old_master_ready_fd is None or not (self.lifecycle.ready or self.old_master_pid is None):
            return
        took_stats = self.stats_server is not None and self.stats_server.adopted
        if self.stats_server is not None:
            self.stats_server.resume()
        reexec.tell_old_master_ready(self.old_master_ready_fd, took_stats)
        self.old_master_ready_fd = None

    def _check_old_master(self) -> None:
        """In an upgraded master: once the old master is gone, own the socket files and pidfile."""
        if self.old_master_pid is None or os.getppid() == self.old_master_pid:
            return
        error_log.info("the old master %d has exited; this master now owns the sockets", self.old_master_pid)
        self.old_master_pid = None
        for listener in self.listeners:
            if listener.is_unix and listener.unix_path and not self.sockets_replace_binds:
                listener.owns_path = True  # (systemd's socket files stay systemd's)
        if self.stats_server is not None and self.stats_server.listener.is_unix:
            self.stats_server.listener.owns_path = True

    # -- stop ----------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop every worker: TERM (serve the backlog, finish in-flight requests) within
        graceful_timeout, or QUIT and a short grace; then KILL what remains."""
        self.lifecycle.stopping()  # sd_notify STOPPING=1
        graceful = self.stopping == "graceful"
        signum = signal.SIGTERM if graceful else signal.SIGQUIT
        grace = self.config.graceful_timeout if graceful else FAST_SHUTDOWN_GRACE
        assert self.scoreboard is not None
        for record in self.workers.values():
            if graceful:
                self.scoreboard.ask_to_drain(record.slot)
            self._stop_worker(record, signum)
        for listener in self.listeners:
            # Our copies go now: once the workers have served the queue and closed theirs,
            # new connections are refused (retryable) instead of queued and reset.
            listener.sock.close()
        deadline = time.monotonic() + grace
        while self.workers and time.monotonic() < deadline:
            self._escalate_on_signal()
            self.reap()
            if self.workers:
                self.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            if self.stopping == "fast" and graceful:
                graceful = False
                deadline = min(deadline, time.monotonic() + FAST_SHUTDOWN_GRACE)
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
            if pid == self.new_master_pid:
                self._new_master_exited(status)
            record = self.workers.pop(pid, None)
            if record is not None:
                self._log_exit(record, status, False)
        error_log.info("master %d exiting", self.pid)

    def _escalate_on_signal(self) -> None:
        """During a graceful shutdown, INT or QUIT makes it fast; other signals are dropped."""
        while self.signal_queue:
            signum = self.signal_queue.pop(0)
            if signum in (signal.SIGINT, signal.SIGQUIT) and self.stopping == "graceful":
                error_log.info("%s received during graceful shutdown: stopping fast", signal.Signals(signum).name)
                self.stopping = "fast"
                for record in self.workers.values():
                    self._kill(record.pid, signal.SIGQUIT)


def describe_status(status: int) -> str:
    """'SIGSEGV' or 'exit code 7': how a wait status is named in logs."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            return signal.Signals(signum).name
        except ValueError:
            return f"signal {signum}"
    return f"exit code {os.WEXITSTATUS(status)}"
