"""The master's process model: what it does and says at each point of its life.

The arbiter calls one method here per event — prepared, sockets bound, loop turn, reloading,
stopping, logs reopened, finished — and this module turns those into the pid file, detaching as a
daemon, handing files to the workers' user, systemd notifications, the daemon's report to the
command that launched it, and the master's process title. Keeping it here keeps the arbiter about
supervision, and each concern in its own small module (pidfile, daemon, privileges, systemd).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from forkserve.master import daemon, pidfile
from forkserve.master.systemd import Notifier
from forkserve.process import privileges
from forkserve.process.exits import EXIT_FAILURE
from forkserve.process.logs import access_log, error_log
from forkserve.process.proctitle import master_title, set_title
from forkserve.process.scoreboard import State
from forkserve.process.sockets import Listener
from forkserve.settings.registry import Config

DAEMON_UMASK = 0o022  # what a daemon gets unless 'umask' is set (it should not inherit a shell's 0)


class StartError(Exception):
    """The server must not start; the message is one line, ``exit_code`` the process exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _umask_is_set(config: Config) -> bool:
    return config.sources.get("umask", "default") != "default"


def prepare(config: Config) -> None:
    """In ``cli.main`` before the arbiter starts: checks whose failure must reach the terminal.

    Raises StartError (a live master owns the pid file). Applies an explicitly set ``umask`` to
    this process, and so to the workers it forks. Logs warnings for settings that will not do
    what the user may expect.
    """
    # Paths the user gave are relative to where forkserve was started, like the log files (opened
    # already); the master may chdir (setting 'chdir') before it writes or watches them.
    if config.pidfile:
        config.values["pidfile"] = os.path.abspath(config.pidfile)
    config.values["reload_extra_files"] = [os.path.abspath(path) for path in config.reload_extra_files]
    if config.pidfile:
        try:
            warning = pidfile.check(config.pidfile)
        except pidfile.PidfileError as error:
            raise StartError(str(error), EXIT_FAILURE) from None
        if warning:
            error_log.warning(warning)
    if _umask_is_set(config):
        os.umask(config.umask)
    if config.daemon:
        for warning in daemon.log_warnings(config):
            error_log.warning(warning)
    if config.reload and config.preload_app:
        error_log.warning(
            "reload: preload_app is on, so new workers are forked from the master's copy of the app "
            "and do not see your edits; drop --preload for development"
        )


class MasterLifecycle:
    """The master's side of the process model; one instance per arbiter."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.notifier = Notifier(os.environ)
        self.launcher: daemon.Launcher | None = None
        self.identity: privileges.Identity | None = None
        self.pidfile_path: str | None = None
        self.parent = os.getppid()
        self.ready = False
        self.stop_announced = False
        self.title = ""
        self.failure: str | None = None

    # -- events, in the order they happen ----------------------------------------------------

    def started(self, listeners: Sequence[Listener]) -> int | None:
        """Sockets are bound: detach if a daemon, write the pid file, hand files to the workers'
        user. Returns an exit code when the master must not go on, else None."""
        if self.config.daemon:
            if not _umask_is_set(self.config):
                os.umask(DAEMON_UMASK)
            self.launcher = daemon.detach()
        self.parent = os.getppid()
        if self.config.pidfile:
            path = pidfile.path_for_this_master(self.config.pidfile)
            try:
                pidfile.write(path)
            except pidfile.PidfileError as error:
                return self._fail(str(error))
            self.pidfile_path = path
        try:
            self.identity = privileges.resolve(self.config)
        except privileges.PrivilegeError as error:
            return self._fail(str(error))
        owned_sockets = [listener.unix_path for listener in listeners if listener.owns_path and listener.unix_path]
        privileges.hand_over([*self._log_files(), *owned_sockets], self.identity)
        return None

    def tick(self, arbiter: Any) -> None:
        """Each loop turn: announce readiness once every worker is up; keep the title current."""
        live = [record for record in arbiter.workers.values() if record.stop_sent_at is None]
        stopping = self.stop_announced or arbiter.stopping is not None
        if not self.ready and not stopping and self._all_up(arbiter, live):
            self.ready = True
            error_log.debug("ready: %d workers serving", len(live))
            self.notifier.ready(f"{len(live)} workers serving")
            if self.launcher is not None:
                self.launcher.ready()
        title = master_title(self.config.app_name, len(live), draining=self.stop_announced)
        if title != self.title:
            self.title = title
            set_title(title)
            if self.ready and not self.stop_announced:
                self.notifier.status(f"{len(live)} workers serving")
        self._promote_pidfile()

    def reloading(self) -> None:
        """HUP: systemd hears RELOADING=1; READY=1 follows once the workers are all up again."""
        self.ready = False
        self.notifier.reloading()

    def stopping(self) -> None:
        """TERM (at the start of shutdown_delay, if set), INT or QUIT: STOPPING=1, once; never
        READY=1 after it."""
        if not self.stop_announced:
            self.stop_announced = True
            self.notifier.stopping()

    def logs_reopened(self) -> None:
        """USR1, after the master reopened the logs and before the workers do: let them open them."""
        privileges.hand_over(self._log_files(), self.identity)

    def finished(self, code: int) -> None:
        """The master is about to exit with ``code``: remove our pid file, tell a waiting launcher."""
        if self.pidfile_path:
            pidfile.remove(self.pidfile_path)
        if self.launcher is not None and self.launcher.waiting:
            where = self.config.errorlog if self.config.errorlog != "-" else "the error log (lost: it is '-')"
            message = self.failure or (
                f"the server stopped during start-up (exit code {code}); see {where} for why"
            )
            self.launcher.failed(code or EXIT_FAILURE, message)
        self.notifier.close()

    # -- helpers -------------------------------------------------------------------------------

    def _fail(self, message: str) -> int:
        error_log.error("%s", message)
        self.failure = message
        return EXIT_FAILURE

    @staticmethod
    def _all_up(arbiter: Any, live: list[Any]) -> bool:
        if not live or len(live) < arbiter.target_workers or arbiter.scoreboard is None:
            return False
        return all(arbiter.scoreboard.read(record.slot).state in (State.IDLE, State.BUSY) for record in live)

    @staticmethod
    def _log_files() -> list[str]:
        return privileges.log_files([error_log, access_log])

    def _promote_pidfile(self) -> None:
        """After a USR2 upgrade: once the old master (our parent) is gone, ``path.2`` becomes ``path``."""
        target = self.config.pidfile
        if not self.pidfile_path or not target or self.pidfile_path == target:
            return
        if os.getppid() != self.parent and pidfile.promote(self.pidfile_path, target):
            error_log.info("old master gone; pidfile %s now names this master", target)
            self.pidfile_path = target
