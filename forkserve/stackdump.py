"""Python stacks to the error log: when the master times a worker out, and when a worker crashes.

``faulthandler`` writes from a C signal handler straight to a file descriptor, so it works even
while the main thread is stuck in ``time.sleep``, a lock or a C extension, and it shows every
thread. The worker registers :data:`TIMEOUT_SIGNAL` for that dump (chained, so the worker's own
Python handler then runs the ``worker_abort`` hook and answers the client with a 500), and enables
the fatal-error dump (segfaults) on the same file. After the log files are reopened (USR1) the
registration must be renewed, since faulthandler keeps the old file object.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
from typing import IO, Any

from forkserve.logs import error_log

# A real-time signal: nothing sends it by accident (a USR2 or ABRT sent to a whole process group
# would otherwise abort every worker), and faulthandler refuses the fatal signals like SIGABRT.
TIMEOUT_SIGNAL = signal.SIGRTMIN


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


def install() -> None:
    """(Re)point the timeout dump and the crash dump at the error log's current file.

    Call after the worker's Python handler for TIMEOUT_SIGNAL is installed: the dump chains to it.
    """
    stream = error_log_stream()
    stream.flush()
    faulthandler.register(TIMEOUT_SIGNAL, file=stream, all_threads=True, chain=True)
    faulthandler.enable(file=stream, all_threads=True)
