"""USR2: start a new master from the current code, handing it the listening sockets.

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

from forkserve.process.exits import EXIT_EXEC_FAILED

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
