"""Python stacks to the error log: when the master times a worker out, and when a worker crashes.

``faulthandler`` writes from a C signal handler straight to a file descriptor, so it works even
while the main thread is stuck in ``time.sleep``, a lock or a C extension, and it shows every
thread. The worker registers :data:`TIMEOUT_SIGNAL` for that dump (chained, so the worker's own
Python handler then runs the ``worker_abort`` hook and answers the client with a 500), and enables
the fatal-error dump (segfaults) on the same file. After the log files are reopened (USR1) the
registration must be renewed, since faulthandler keeps the old file object.

On :data:`STACKS_SIGNAL` (``forkserve ctl stacks``) a worker writes every thread's stack into its
own stack file (see ``forkserve.master.stacks``), the same way, then its threads' names and an
end marker; nothing is interrupted.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
from contextlib import suppress
from typing import IO, Any

from forkserve.process import logs
from forkserve.process.logs import error_log

# A real-time signal: nothing sends it by accident (a USR2 or ABRT sent to a whole process group
# would otherwise abort every worker), and faulthandler refuses the fatal signals like SIGABRT.
TIMEOUT_SIGNAL = signal.SIGRTMIN
STACKS_SIGNAL = signal.SIGRTMIN + 1  # ctl stacks: write every thread's stack to the stack file
STACKS_THREADS = "-- forkserve: threads --"
STACKS_END = "-- forkserve: end of stacks --"


def error_log_stream() -> IO[Any]:
    """The file the error log writes to (its first stream handler), else stderr."""
    for handler in error_log.handlers:
        stream = getattr(handler, "stream", None)
        if isinstance(handler, logging.StreamHandler) and stream is not None:
            try:
                stream.fileno()
            except (OSError, ValueError, AttributeError):
                continue
            return stream
    return sys.stderr


STDERR_FD = 2


def install() -> None:
    """(Re)point the timeout dump and the crash dump at the error log's current file.

    Call after the worker's Python handler for TIMEOUT_SIGNAL is installed: the dump chains to it.
    """
    stream = error_log_stream()
    with suppress(OSError, ValueError):
        stream.flush()
    _dump_to(stream)


def reopen_logs(timeout_dump: bool = True) -> None:
    """Reopen the log files (USR1) without a moment when a dump would go to a closed file.

    faulthandler writes to the file descriptor it was given; the reopen closes that descriptor
    before it opens the new file. A timeout or crash dump in between would be lost (or land on
    whatever reused the number), so the dumps go to file descriptor 2 — always open, even in a
    daemon (/dev/null) — until the new file is in place. (``timeout_dump`` False: a worker with
    app threads, which has only the crash dump.)
    """
    if timeout_dump:
        _dump_to(STDERR_FD)
    else:
        faulthandler.enable(file=STDERR_FD, all_threads=True)
    logs.reopen()
    if timeout_dump:
        install()
    else:
        install_crash_dump()


def install_crash_dump() -> None:
    """Only the crash dump (a worker with app threads logs a timed-out thread's stack itself)."""
    faulthandler.enable(file=error_log_stream(), all_threads=True)


def _dump_to(target: IO[Any] | int) -> None:
    faulthandler.register(TIMEOUT_SIGNAL, file=target, all_threads=True, chain=True)
    faulthandler.enable(file=target, all_threads=True)


def install_stacks(fd: int) -> None:
    """In a worker: answer STACKS_SIGNAL with every thread's stack in ``fd`` (faulthandler, from C,
    so a main thread stuck in C code does not stop it), then — when Python gets to run the
    chained handler — the threads' names and the end marker, in one write."""

    def names(signum: int, frame: Any) -> None:
        lines = [STACKS_THREADS, *(f"thread 0x{thread.ident:016x} {thread.name}"
                                   for thread in threading.enumerate() if thread.ident), STACKS_END]
        with suppress(OSError):
            os.write(fd, ("\n" + "\n".join(lines) + "\n").encode("utf-8", "replace"))

    signal.signal(STACKS_SIGNAL, names)
    faulthandler.register(STACKS_SIGNAL, file=fd, all_threads=True, chain=True)
