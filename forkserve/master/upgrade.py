"""USR2: start a new master from the current code, handing it the listening sockets.

:class:`Upgrade` is the master's side of it, in both roles: the old master that starts a
successor and hears when it is ready (or that it died), and the new master that adopted the
sockets, tells the old one when its workers are up, and owns the socket files and the pid file
once the old master is gone.

The old master forks; the child marks the listening descriptors inheritable, names them in the
environment (``FORKSERVE_FDS``, with ``FORKSERVE_FDS_PID`` so a grandchild that inherits the
environment does not take them for its own) and execs ``python -m forkserve`` with the same
arguments. The new master adopts the sockets instead of binding, so no connection is refused
while both run. The old master keeps serving until it is told to stop (WINCH, TERM).

The stats endpoint's listening socket is handed over the same way (``FORKSERVE_STATS_FD``), but
only one master answers it at a time, so a load balancer asking /readyz never hears a master that
is still booting or one that is stopping its workers: the new master starts answering once its
workers are all up and then tells the old master, over a pipe (``FORKSERVE_READY_FD``), which stops
answering. That pipe also lets the old master log the moment its successor is ready.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from forkserve.master import pidfile
from forkserve.process.exits import EXIT_EXEC_FAILED, describe_status
from forkserve.process.hooks import call_hook
from forkserve.process.logs import error_log
from forkserve.process.sockets import Listener
from forkserve.settings.registry import Config

if TYPE_CHECKING:
    from forkserve.master.events import Events
    from forkserve.master.lifecycle import MasterLifecycle
    from forkserve.stats.server import StatsServer

FDS_ENV = "FORKSERVE_FDS"
FDS_PID_ENV = "FORKSERVE_FDS_PID"
OLD_MASTER_ENV = "FORKSERVE_OLD_MASTER"
FDS_ONLY_ENV = "FORKSERVE_FDS_ONLY"
STATS_FD_ENV = "FORKSERVE_STATS_FD"
READY_FD_ENV = "FORKSERVE_READY_FD"
READY_WITH_STATS = b"S"  # ready, and answering the stats socket it was handed
READY = b"R"  # ready; the handed stats socket (if any) was not taken (stats_bind changed)


@dataclass(frozen=True)
class Handover:
    """What an upgrading master passed to this process (empty when it is a plain start)."""

    fds: list[int] = field(default_factory=list)
    old_master: int | None = None
    replaces_binds: bool = False  # the sockets came from systemd: they are the whole list
    stats_fd: int | None = None  # the old master's stats listening socket
    ready_fd: int | None = None  # write end of the pipe on which the old master waits for "ready"


@dataclass(frozen=True)
class NewMaster:
    """A started successor, seen from the old master: its pid, and the read end of the pipe on
    which it says it is ready (one byte: READY_WITH_STATS or READY; end of file if it died)."""

    pid: int
    ready_fd: int


def spawn_new_master(argv: Sequence[str], fds: Sequence[int], cwd: str, replaces_binds: bool = False,
                     stats_fd: int | None = None) -> NewMaster:
    """Fork and exec a new master inheriting ``fds`` (and ``stats_fd``); in the old master, return it."""
    ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        os.close(ready_read)
        os.close(ready_write)
        raise
    if pid != 0:
        os.close(ready_write)
        os.set_blocking(ready_read, False)
        return NewMaster(pid, ready_read)
    try:  # the child: never returns
        for fd in (*fds, ready_write) if stats_fd is None else (*fds, stats_fd, ready_write):
            os.set_inheritable(fd, True)
        environ = dict(os.environ)
        environ[FDS_ENV] = ",".join(str(fd) for fd in fds)
        environ[FDS_PID_ENV] = str(os.getpid())
        environ[OLD_MASTER_ENV] = str(os.getppid())
        environ[READY_FD_ENV] = str(ready_write)
        if stats_fd is not None:
            environ[STATS_FD_ENV] = str(stats_fd)
        if replaces_binds:
            environ[FDS_ONLY_ENV] = "1"
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-m", "forkserve", *argv], environ)
    except BaseException as error:  # noqa: BLE001 -- the forked child must never return to the loop
        try:
            os.write(2, f"forkserve: cannot exec the new master: {error}\n".encode())
        finally:
            os._exit(EXIT_EXEC_FAILED)
    raise AssertionError("unreachable")


def handed_over(environ: MutableMapping[str, str]) -> Handover:
    """The sockets and old master pid an upgrading master passed to *this* process.

    The variables are removed from ``environ`` either way, so the app and any later upgrade
    never see stale ones.
    """
    fds_text = environ.pop(FDS_ENV, "")
    owner = environ.pop(FDS_PID_ENV, "")
    old_master = environ.pop(OLD_MASTER_ENV, "")
    only = environ.pop(FDS_ONLY_ENV, "") == "1"
    stats_text = environ.pop(STATS_FD_ENV, "")
    ready_text = environ.pop(READY_FD_ENV, "")
    if not fds_text or owner != str(os.getpid()):
        return Handover()
    try:
        fds = [int(item) for item in fds_text.split(",") if item]
        stats_fd = int(stats_text) if stats_text else None
        ready_fd = int(ready_text) if ready_text else None
        handover = Handover(fds, int(old_master) if old_master else None, only, stats_fd, ready_fd)
    except ValueError:
        return Handover()
    if ready_fd is not None:
        try:
            os.set_inheritable(ready_fd, False)  # the app's subprocesses must not hold it open
        except OSError:
            return Handover(fds, handover.old_master, only, stats_fd, None)
    return handover


def tell_old_master_ready(fd: int, took_stats: bool) -> None:
    """In the new master, once every worker is up: one byte to the old master, then close.
    The old master may be gone already (EPIPE); that is fine."""
    try:
        os.write(fd, READY_WITH_STATS if took_stats else READY)
    except OSError:
        pass
    finally:
        os.close(fd)


class Master(Protocol):
    """What an upgrade reads and changes on its master (the Arbiter: the ``server`` hooks see)."""

    config: Config
    listeners: list[Listener]
    launch_cwd: str
    stats_server: StatsServer | None
    events: Events
    lifecycle: MasterLifecycle
    paused: bool
    stopping: str | None


class Upgrade:
    """This master's part in a USR2 upgrade: its successor, or the master it succeeds."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.new_master_pid: int | None = None
        self.old_master_pid: int | None = None
        self.sockets_replace_binds = False  # systemd's sockets: a USR2 successor takes them as is
        self.new_master_ready_fd: int | None = None  # USR2: the successor says "ready" on this pipe
        self.old_master_ready_fd: int | None = None  # after USR2, in the successor: tell the old master

    def adopt(self, handover: Handover, activated: Sequence[int]) -> None:
        """At start: what an upgrading master handed over, if any; systemd's sockets, if any."""
        self.old_master_pid = handover.old_master
        self.old_master_ready_fd = handover.ready_fd
        self.sockets_replace_binds = bool(activated) or handover.replaces_binds

    @property
    def in_progress(self) -> bool:
        """Both masters run (this one's successor, or its predecessor), on the same sockets."""
        return self.new_master_pid is not None or self.old_master_pid is not None

    def fds(self) -> tuple[int | None, int | None]:
        """The pipes to the other master (a forked worker closes them)."""
        return self.old_master_ready_fd, self.new_master_ready_fd

    # -- the old master ------------------------------------------------------------------------

    def start(self) -> None:
        """Fork+exec a new master that inherits the listening sockets; keep serving meanwhile."""
        master = self.master
        if self.new_master_pid is not None:
            error_log.warning("USR2 ignored: new master %d is already running", self.new_master_pid)
            return
        call_hook(master.config, "pre_exec", master)
        stats = master.stats_server
        try:
            new_master = spawn_new_master(
                master.config.argv, [listener.fileno() for listener in master.listeners], master.launch_cwd,
                replaces_binds=self.sockets_replace_binds,
                stats_fd=stats.listener.fileno() if stats is not None else None,
            )
        except OSError as error:
            error_log.error("USR2: cannot start a new master: %s", error)
            return
        self.new_master_pid = new_master.pid
        self.new_master_ready_fd = new_master.ready_fd
        master.events.readers[new_master.ready_fd] = self._on_new_master_ready
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
        stats = self.master.stats_server
        if said == READY_WITH_STATS and stats is not None:
            stats.pause()
            error_log.info("new master %d is ready; it answers the stats endpoint from now on",
                           self.new_master_pid)
        else:
            error_log.info("new master %d is ready", self.new_master_pid)

    def _forget_new_master_ready_fd(self) -> None:
        fd, self.new_master_ready_fd = self.new_master_ready_fd, None
        if fd is not None:
            self.master.events.readers.pop(fd, None)
            os.close(fd)

    def new_master_exited(self, status: int) -> None:
        master = self.master
        error_log.error(
            "the new master %d (USR2 upgrade) ended: %s; this master keeps serving",
            self.new_master_pid, describe_status(status),
        )
        self.new_master_pid = None
        self._forget_new_master_ready_fd()
        if master.stats_server is not None:
            master.stats_server.resume()
        if master.paused and master.stopping is None:
            error_log.info("starting workers again (they were stopped by WINCH for the upgrade)")
            master.paused = False

    def hand_pidfile_to_new_master(self) -> None:
        """At exit after USR2: the pid file names the new master, so there is no moment without one.

        (MasterLifecycle writes the file — PIDFILE.2 while an old master still runs — and promotes
        it once the old master is gone.)
        """
        path = self.master.lifecycle.pidfile_path
        if self.new_master_pid is not None and path and pidfile.read(path) == os.getpid():
            pidfile.write(path, self.new_master_pid)

    # -- the new master ------------------------------------------------------------------------

    def tell_old_master_when_ready(self) -> None:
        """In a USR2 successor: once every worker is up (or the old master is gone), answer the
        stats endpoint and tell the old master, which stops answering it."""
        master = self.master
        if self.old_master_ready_fd is None or not (master.lifecycle.ready or self.old_master_pid is None):
            return
        stats = master.stats_server
        took_stats = stats is not None and stats.adopted
        if stats is not None:
            stats.resume()
        tell_old_master_ready(self.old_master_ready_fd, took_stats)
        self.old_master_ready_fd = None

    def check_old_master(self) -> None:
        """In an upgraded master: once the old master is gone, own the socket files and pidfile."""
        if self.old_master_pid is None or os.getppid() == self.old_master_pid:
            return
        error_log.info("the old master %d has exited; this master now owns the sockets", self.old_master_pid)
        self.old_master_pid = None
        for listener in self.master.listeners:
            if listener.is_unix and listener.unix_path and not self.sockets_replace_binds:
                listener.owns_path = True  # (systemd's socket files stay systemd's)
        stats = self.master.stats_server
        if stats is not None and stats.listener.is_unix:
            stats.listener.owns_path = True
