"""The master: binds, forks, supervises. It never touches a request.

The arbiter keeps the loop, the signal table and the decisions; the work is done by its parts:
:class:`~forkserve.master.events.Events` (signals queued by the handlers, the wake-up pipe,
other components' descriptors), :class:`~forkserve.master.fleet.Fleet` (the workers: spawn,
reap, timeouts, recycling, stop), :class:`~forkserve.master.reload.Reload` (HUP),
:class:`~forkserve.master.upgrade.Upgrade` (USR2) and
:class:`~forkserve.master.lifecycle.MasterLifecycle` (pid file, daemon, systemd, title). Hooks,
workers and the stats endpoint see the arbiter itself as ``server``.

One loop pass: act on queued signals (:data:`HANDLED_SIGNALS`, each handled by the ``_on_sig*``
method of its name), reap exited children, read worker messages (control channel), then
:meth:`Arbiter.manage` — timeouts, recycling, reload progress, respawns — and sleep in
:meth:`Arbiter.wait` until the next signal, message or tick. Tests drive the loop by queueing
signals (``arbiter.events.signals.append(signal.SIGTTIN); arbiter.handle_signals()``).

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

import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from forkserve import __version__
from forkserve.master import systemd
from forkserve.master.events import Events
from forkserve.master.fleet import Fleet, WorkerRecord
from forkserve.master.lifecycle import MasterLifecycle
from forkserve.master.operations import Operations
from forkserve.master.reload import Reload
from forkserve.master.upgrade import Upgrade, handed_over
from forkserve.process import logs
from forkserve.process.exits import EXIT_BOOT_FAILED, EXIT_FAILURE, EXIT_OK, describe_status
from forkserve.process.hooks import call_hook
from forkserve.process.loader import AppLoadError, prepare_import_path
from forkserve.process.logs import error_log
from forkserve.process.proctitle import set_title
from forkserve.process.scoreboard import Scoreboard
from forkserve.process.sockets import BindError, Listener, create_listeners, describe, stop_new_connections
from forkserve.settings.registry import Config
from forkserve.stats.metrics import Telemetry

if TYPE_CHECKING:
    from forkserve.stats.server import StatsServer

LOOP_TICK = 1.0
FAST_SHUTDOWN_GRACE = 2.0
MIN_SCOREBOARD_SLOTS = 256
HANDLED_SIGNALS = ("SIGHUP", "SIGTERM", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTTIN", "SIGTTOU",
                   "SIGWINCH", "SIGCHLD")


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
        self.log = error_log  # gunicorn's hooks log through server.log
        self.listeners: list[Listener] = []
        self.target_workers = config.workers
        self.app: Callable[..., Any] | None = None
        self.exit_code = EXIT_OK
        self.stopping: str | None = None
        self.paused = False
        self.pid = os.getpid()
        self.launch_cwd = os.getcwd()
        self.last_boot_failure = ""
        self.generation = 0
        self.events = Events()
        self.fleet = Fleet(self)
        self.reload = Reload(self)
        self.upgrade = Upgrade(self)
        self.lifecycle = MasterLifecycle(config)  # process model: pidfile, daemon, systemd, title
        self.telemetry = Telemetry()  # restarts, draining, loop tick: see forkserve.stats.metrics
        self.stats_server: StatsServer | None = None
        self.drain_ends_at: float | None = None  # TERM with shutdown_delay: when the wait is over
        self.ops = Operations(self)  # StatsD, adaptive workers, control socket, the app's metrics

    # What hooks, the stats endpoint and the process model read: the fleet's, shown as the server's.

    @property
    def workers(self) -> dict[int, WorkerRecord]:
        return self.fleet.workers

    @property
    def scoreboard(self) -> Scoreboard | None:
        return self.fleet.scoreboard

    # -- start ---------------------------------------------------------------------------------

    @property
    def cfg(self) -> Config:
        """gunicorn's name for the configuration hooks read (the current one after a HUP)."""
        return self.config

    def run(self) -> int:
        """Start, supervise until told to stop, shut down; return the exit code."""
        call_hook(self.config, "on_starting", self)
        share_openssl()
        handover = handed_over(os.environ)
        activated = systemd.take_listen_fds(os.environ)
        self.upgrade.adopt(handover, activated)
        try:
            prepare_import_path(self.config)
        except AppLoadError as error:
            error_log.error("%s", error)
            return EXIT_BOOT_FAILED
        self.ops.before_app()  # PROMETHEUS_MULTIPROC_DIR, before the app is imported anywhere
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
                    self.config.stats_bind, self, self.events.readers, self.events.writers, self.config.umask,
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
            upgrading = self.upgrade.new_master_pid is not None  # it uses our unix socket files now
            for listener in self.listeners:
                listener.close(remove_path=not upgrading)
            if self.stats_server is not None:
                self.stats_server.close(keep_path=upgrading)
            self.ops.close()
            self.upgrade.hand_pidfile_to_new_master()
            call_hook(self.config, "on_exit", self)
            self.lifecycle.finished(code)  # pidfile removed if still ours, a waiting daemon launcher told

    def _serve(self) -> int:
        if self.config.preload_app:
            try:
                self.app = self.reload.preloaded.load(self.config.wsgi_app)
            except AppLoadError as error:
                error_log.error("failed to load the app: %s", error)
                return EXIT_BOOT_FAILED
        self.prepare()
        self.events.install_signal_handlers(HANDLED_SIGNALS)
        self.ops.started()  # the control socket, StatsD
        set_title(f"master [{self.config.app_name}]")
        error_log.info("forkserve %s starting (master pid %d)", __version__, self.pid)
        if self.upgrade.old_master_pid is not None:
            error_log.info("upgrade: took over the listening sockets of master %d", self.upgrade.old_master_pid)
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
        # A worker takes one slot, plus one per app thread; room for a reload's second generation
        # and for TTIN to grow the fleet.
        per_worker = 1 + (self.config.threads if self.config.threads > 1 else 0)
        self.fleet.open(max(MIN_SCOREBOARD_SLOTS, self.target_workers * 4 * per_worker))
        self.events.wake_fds.append(self.fleet.control_read.fileno())
        self.events.open()

    def close_in_child(self) -> None:
        """In a freshly forked worker: drop the master's signal plumbing and watched fds."""
        stats_fd = self.stats_server.listener.fileno() if self.stats_server is not None else None
        self.events.close_in_child(stats_fd, *self.upgrade.fds())  # (a paused stats listener too)

    # -- the loop ------------------------------------------------------------------------------

    def _main_loop(self) -> None:
        while self.stopping is None:
            self.handle_signals()
            self._check_drain_over()
            self.reap()
            self.fleet.read_control()
            if self.stopping is not None:
                break
            self.manage()
            self.wait(self._next_wakeup())

    def wait(self, timeout: float) -> None:
        """Sleep until a signal, a control message, an extra reader or writer, or the timeout."""
        self.telemetry.tick()
        self.events.wait(timeout)

    def _next_wakeup(self) -> float:
        now = time.monotonic()
        timeout = LOOP_TICK
        backoff = self.fleet.backoff.wait_left(now)
        if backoff > 0:
            timeout = min(timeout, backoff)
        kill = self.fleet.next_kill_in(now)
        if kill is not None:
            timeout = min(timeout, kill)
        if self.drain_ends_at is not None:
            timeout = min(timeout, self.drain_ends_at - now)
        return max(0.01, min(timeout, self.ops.next_wakeup(now) or timeout))

    def handle_signals(self) -> None:
        """Act on every queued signal, in arrival order."""
        queue = self.events.signals
        while queue:
            signum = queue.pop(0)
            name = signal.Signals(signum).name
            handler = getattr(self, f"_on_{name.lower()}", None)
            if handler is not None:
                handler()

    def manage(self) -> None:
        """Everything the master does between signals, in one pass."""
        now = time.monotonic()
        fleet = self.fleet
        self.upgrade.check_old_master()
        fleet.note_ready(now)
        fleet.check_timeouts(now)
        fleet.enforce_deadlines(now)
        fleet.check_lifetimes(now)
        if self.reload.state is not None:
            self.reload.advance()
        self.ops.tick(now)  # StatsD gauges, the adaptive worker count, the control socket
        fleet.stop_replaced_retirees(self.target_workers, self.paused)
        self.spawn_missing()
        self.lifecycle.tick(self)  # readiness (sd_notify, daemon launcher), master title, pidfile
        self.upgrade.tell_old_master_when_ready()

    def spawn_missing(self) -> None:
        """Fork workers up to the target, unless paused, backing off, or in a rolling reload."""
        if self.paused or self.stopping is not None:
            return
        if self.reload.state is not None and self.reload.state.strategy == "rolling":
            return  # Reload.advance paces the spawns
        if self.fleet.backoff.wait_left(time.monotonic()) > 0:
            return
        self.fleet.spawn_up_to(self.target_workers)

    def set_target(self, count: int) -> None:
        old, self.target_workers = self.target_workers, count
        error_log.info("worker count %d -> %d", old, count)
        call_hook(self.config, "nworkers_changed", self, count, old)

    # -- the signal table ----------------------------------------------------------------------

    def _on_sigterm(self) -> None:
        if self.drain_ends_at is not None:
            error_log.info("TERM received again during shutdown_delay: graceful shutdown now")
            self.stopping = "graceful"
        elif self.config.shutdown_delay > 0 and not self.upgrade.in_progress:
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
        self.fleet.signal_all(signal.SIGUSR1)

    def _on_sigttin(self) -> None:
        self.set_target(self.target_workers + 1)

    def _on_sigttou(self) -> None:
        if self.target_workers <= 1:
            error_log.info("TTOU received: already at 1 worker, the minimum")
            return
        self.set_target(self.target_workers - 1)
        self.fleet.retire_extra(self.target_workers)

    def _on_sigwinch(self) -> None:
        error_log.info("WINCH received: stopping every worker gracefully; the master stays (HUP restarts them)")
        self.paused = True
        if self.reload.state is not None:
            self.reload.finish()
        for record in self.fleet.workers.values():
            if record.stop_sent_at is None:
                self.fleet.stop(record, signal.SIGTERM)

    def _on_sighup(self) -> None:
        if self._ignored_while_draining("HUP"):
            return
        self.reload.start()

    def _on_sigusr2(self) -> None:
        if self._ignored_while_draining("USR2"):
            return
        self.upgrade.start()

    def _ignored_while_draining(self, name: str) -> bool:
        """A reload or upgrade during shutdown_delay would restart what is about to stop."""
        if self.drain_ends_at is None:
            return False
        error_log.warning("%s ignored: the server is draining before its shutdown", name)
        return True

    # -- exits ---------------------------------------------------------------------------------

    def reap(self) -> None:
        """Collect every exited child, log why it ended, and react (respawn backoff, reload
        abort, or — at first start — stopping on a boot failure)."""
        self.fleet.read_control()  # a worker's last words (e.g. "retire, exiting") come before its exit
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.upgrade.new_master_pid:
                self.upgrade.new_master_exited(status)
                continue
            record = self.fleet.workers.pop(pid, None)
            if record is not None:
                self._worker_exited(record, status)
                self.ops.worker_exited(record)

    def _worker_exited(self, record: WorkerRecord, status: int) -> None:
        now = time.monotonic()
        boot_failed, why = self.fleet.exited(record, status, now, self.stopping is not None)
        if self.stopping is not None:
            return
        reloading = self.reload.state
        if (reloading is not None and record.generation == reloading.generation
                and record.ready_at is None and record.stop_sent_at is None):
            # Crashed, failed to load the app, or killed as stuck while booting: the new
            # configuration or code does not come up, so the old workers stay.
            reason = f"a new worker could not load the app:\n{why.rstrip()}" if why else (
                f"a new worker ended before it was ready ({describe_status(status)})"
            )
            self.reload.abort(reason)
            return
        if record.expected_exit:
            return
        if not boot_failed:
            self.telemetry.record_restart("crash")
        if boot_failed and not self.fleet.ever_ready:
            error_log.error("worker failed to boot: %s", (why or "see above").rstrip())
            error_log.error("shutting down: the app cannot be loaded")
            self.exit_code = EXIT_BOOT_FAILED
            self.stopping = "fast"
            return
        if boot_failed and why != self.last_boot_failure:
            error_log.error("worker failed to boot: %s", (why or "see above").rstrip())
            self.last_boot_failure = why
        backoff = self.fleet.backoff
        delay = backoff.worker_exited(now - record.spawned_at, now)
        if delay:
            error_log.warning(
                "worker %d died %.1fs after it was started (%d in a row); waiting %.2fs before the next",
                record.pid, now - record.spawned_at, backoff.failures, delay,
            )

    # -- stop ----------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop every worker: TERM (serve the backlog, finish in-flight requests) within
        graceful_timeout, or QUIT and a short grace; then KILL what remains."""
        self.lifecycle.stopping()  # sd_notify STOPPING=1
        graceful = self.stopping == "graceful"
        grace = self.config.graceful_timeout if graceful else FAST_SHUTDOWN_GRACE
        # During a USR2 upgrade the other master serves the same sockets: leave the queue and
        # new connections to it. Otherwise nothing new enters the queue from now on, and the
        # workers serve exactly what it holds.
        drain = graceful and not self.upgrade.in_progress
        if drain:
            for listener in self.listeners:
                try:
                    stop_new_connections(listener)
                except OSError as error:
                    error_log.warning("cannot stop new connections on %s: %s", describe(listener), error)
            error_log.info("no new connections from now on; the workers serve those already queued")
        self.fleet.stop_all(signal.SIGTERM if graceful else signal.SIGQUIT, drain=drain)
        for listener in self.listeners:
            # Our copies go now: once the workers have served the queue and closed theirs,
            # the socket is gone and late connections are refused (retryable).
            listener.sock.close()
        deadline = time.monotonic() + grace
        while self.fleet.workers and time.monotonic() < deadline:
            self._escalate_on_signal()
            self.reap()
            if self.fleet.workers:
                self.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            if self.stopping == "fast" and graceful:
                graceful = False
                deadline = min(deadline, time.monotonic() + FAST_SHUTDOWN_GRACE)
        self.fleet.kill_remaining()
        while self.fleet.workers:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == self.upgrade.new_master_pid:
                self.upgrade.new_master_exited(status)
            record = self.fleet.workers.pop(pid, None)
            if record is not None:
                self.fleet.log_exit(record, status, False, True)
        error_log.info("master %d exiting", self.pid)

    def _escalate_on_signal(self) -> None:
        """During a graceful shutdown, INT or QUIT makes it fast; other signals are dropped."""
        queue = self.events.signals
        while queue:
            signum = queue.pop(0)
            if signum in (signal.SIGINT, signal.SIGQUIT) and self.stopping == "graceful":
                error_log.info("%s received during graceful shutdown: stopping fast", signal.Signals(signum).name)
                self.stopping = "fast"
                self.fleet.signal_all(signal.SIGQUIT)
