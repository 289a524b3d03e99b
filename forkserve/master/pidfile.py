"""The master's pid file: written atomically, removed only by its owner, stale files detected.

Tools (init scripts, logrotate, monitoring) read the pid file to find the master, so a reader must
never see a half-written file (write a temporary file, then rename it over the old one), a master
must never delete a file that names someone else (the new master of a USR2 upgrade), and a file
left by a crashed master must not stop the next start — while a file naming a live master must.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


class PidfileError(Exception):
    """The pid file cannot be used; the message is one line for the user."""


def read(path: str) -> int | None:
    """The pid a pid file holds, or None when it is missing, empty or not a number."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as error:
        raise PidfileError(f"cannot read pidfile {path}: {error.strerror}") from None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _is_live_forkserve(pid: int) -> bool:
    """True when ``pid`` is a running process whose command line names forkserve."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and b"forkserve" in cmdline


def check(path: str) -> str | None:
    """Decide whether a master may start with this pid file, before anything is bound.

    Raises PidfileError when the file names a live forkserve master (another server is running)
    or cannot be written. Returns a warning when a stale file will be replaced, else None.
    A file naming our own parent is not an error: that is the old master of a USR2 upgrade,
    and the new master writes ``path + ".2"`` instead (see :func:`path_for_this_master`).
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise PidfileError(f"cannot write pidfile {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise PidfileError(f"cannot write pidfile {path}: directory {directory} is not writable")
    pid = read(path)
    if pid is None:
        if os.path.exists(path):
            return f"pidfile {path} holds no pid; replacing it"
        return None
    if pid == os.getpid() or _names_our_master_parent(pid):
        return None
    if _is_live_forkserve(pid):
        raise PidfileError(f"pidfile {path} names pid {pid}, a running forkserve master; stop it first")
    return f"pidfile {path} names pid {pid}, which is not a running forkserve master (stale); replacing it"


def path_for_this_master(path: str) -> str:
    """Where this master writes its pid: ``path``, or ``path.2`` while the file names our parent.

    A master started by another master's USR2 upgrade must not take the pid file while the old
    master still serves; it takes ``path.2`` and is promoted when the old master exits.
    """
    return f"{path}.2" if _names_our_master_parent(read(path)) else path


def _names_our_master_parent(pid: int | None) -> bool:
    return pid is not None and pid == os.getppid() and _is_live_forkserve(pid)


def write(path: str, pid: int | None = None) -> None:
    """Write ``pid`` (default: ours) to ``path`` atomically: a temporary file, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    except OSError as error:
        raise PidfileError(f"cannot write pidfile {path}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(f"{os.getpid() if pid is None else pid}\n")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise PidfileError(f"cannot write pidfile {path}: {error.strerror}") from None


def remove(path: str) -> bool:
    """Delete the pid file if it still holds our pid; True if it was removed."""
    try:
        if read(path) != os.getpid():
            return False
        os.unlink(path)
    except (OSError, PidfileError):
        return False
    return True


def promote(current: str, target: str) -> bool:
    """Move our ``path.2`` over ``path`` once the old master is gone; True if it moved."""
    if read(current) != os.getpid():
        return False
    try:
        os.replace(current, target)
    except OSError:
        return False
    return True
