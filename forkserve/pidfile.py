"""The pidfile: the master's pid in a file, written atomically, removed on exit.

Minimal version written for the USR2 upgrade (a new master writes ``PIDFILE.2`` and takes over
``PIDFILE`` once the old master is gone). The process-model work (stale pid detection) extends
this module; keep ``write(path)`` / ``remove(path)`` as the interface the arbiter calls.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def write(path: str, pid: int | None = None) -> None:
    """Write ``pid`` (default: ours) to ``path`` atomically: readers never see a partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".forkserve-pid-", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{pid or os.getpid()}\n")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read(path: str) -> int | None:
    """The pid in ``path``, or None when the file is missing or holds no pid."""
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def remove(path: str) -> None:
    """Remove the pidfile if it still names this process (a new master may own it by now)."""
    if read(path) == os.getpid():
        with contextlib.suppress(OSError):
            os.unlink(path)
