"""USR2: start a new master from the current code, handing it the listening sockets.

The old master forks; the child marks the listening descriptors inheritable, names them in the
environment (``FORKSERVE_FDS``, with ``FORKSERVE_FDS_PID`` so a grandchild that inherits the
environment does not take them for its own) and execs ``python -m forkserve`` with the same
arguments. The new master adopts the sockets instead of binding, so no connection is refused
while both run. The old master keeps serving until it is told to stop (WINCH, TERM).
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field

FDS_ENV = "FORKSERVE_FDS"
FDS_PID_ENV = "FORKSERVE_FDS_PID"
OLD_MASTER_ENV = "FORKSERVE_OLD_MASTER"
FDS_ONLY_ENV = "FORKSERVE_FDS_ONLY"
EXEC_FAILED = 127


@dataclass(frozen=True)
class Handover:
    """What an upgrading master passed to this process (empty when it is a plain start)."""

    fds: list[int] = field(default_factory=list)
    old_master: int | None = None
    replaces_binds: bool = False  # the sockets came from systemd: they are the whole list


def spawn_new_master(argv: Sequence[str], fds: Sequence[int], cwd: str, replaces_binds: bool = False) -> int:
    """Fork and exec a new master inheriting ``fds``; return its pid (in the old master)."""
    pid = os.fork()
    if pid != 0:
        return pid
    try:  # the child: never returns
        for fd in fds:
            os.set_inheritable(fd, True)
        environ = dict(os.environ)
        environ[FDS_ENV] = ",".join(str(fd) for fd in fds)
        environ[FDS_PID_ENV] = str(os.getpid())
        environ[OLD_MASTER_ENV] = str(os.getppid())
        if replaces_binds:
            environ[FDS_ONLY_ENV] = "1"
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-m", "forkserve", *argv], environ)
    except BaseException as error:  # noqa: BLE001 -- the forked child must never return to the loop
        try:
            os.write(2, f"forkserve: cannot exec the new master: {error}\n".encode())
        finally:
            os._exit(EXEC_FAILED)
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
    if not fds_text or owner != str(os.getpid()):
        return Handover()
    try:
        fds = [int(item) for item in fds_text.split(",") if item]
        return Handover(fds, int(old_master) if old_master else None, only)
    except ValueError:
        return Handover()
