"""The error log and the access log.

The error log goes to stderr ('-') or a file, lines shaped ``[time] [pid] [LEVEL] message``.
The access log (off by default) goes to stdout ('-') or a file; its lines are made by
:mod:`forkserve.http.accesslog`. ``logconfig_dict`` (stdlib dictConfig) applies last, for full control.
With ``capture_output`` the processes' stdout and stderr (file descriptors 1 and 2, so output of C
extensions too) go to the error log, as in gunicorn. Files are reopened on USR1 (logrotate); the
reopen happens in the main loops, never in a signal handler.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from forkserve.http.accesslog import compile_format
from forkserve.process import statsd
from forkserve.settings.registry import Config

error_log = logging.getLogger("forkserve.error")
access_log = logging.getLogger("forkserve.access")

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


class _Formatter(logging.Formatter):
    """Local time with the UTC offset, as gunicorn prints it."""

    converter = time.localtime


def _handler_for(target: str, stream: object) -> logging.Handler:
    if target == "-":
        return logging.StreamHandler(stream)  # type: ignore[arg-type]
    return logging.FileHandler(target, encoding="utf-8")


_captured_file: str | None = None  # the error log file fds 1 and 2 point at (capture_output)


def setup(config: Config) -> None:
    """Configure both logs from the settings (logconfig_dict, when given, has the last word).

    Raises ValueError for an access log format that cannot work, OSError for a file that cannot
    be opened: both are reported before anything starts.
    """
    compile_format(config.access_log_format)
    for logger in (error_log, access_log):
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.propagate = False

    handler = _handler_for(config.errorlog, sys.stderr)
    handler.setFormatter(_Formatter(ERROR_FORMAT, DATE_FORMAT))
    error_log.addHandler(handler)
    error_log.setLevel(config.loglevel.upper())

    if config.accesslog:
        stream = sys.stdout
        if config.capture_output and config.accesslog == "-":
            # stdout is about to become the error log; the access log keeps the real stdout
            stream = open(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)  # noqa: SIM115
        access_handler = _handler_for(config.accesslog, stream)
        access_handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(access_handler)
        access_log.setLevel(logging.INFO)
    else:
        access_log.setLevel(logging.CRITICAL + 1)

    if config.logconfig_dict:
        from logging import config as logging_config  # only when asked: it pulls in socketserver...

        logging_config.dictConfig({"version": 1, "disable_existing_loggers": False, **config.logconfig_dict})
    if config.capture_output:
        capture_output(config.errorlog)
    statsd.install_log_counter(statsd.client_for(config), error_log)  # gunicorn.log.<level> counters


def capture_output(errorlog: str) -> None:
    """Point file descriptors 1 and 2 at the error log, so whatever the app prints lands there."""
    global _captured_file
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if errorlog == "-":
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stdout joins stderr, the error log
    else:
        _redirect_to(errorlog)
        _captured_file = errorlog
    # Workers end with os._exit, which flushes nothing: keep no printed line waiting in a buffer.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]


def _redirect_to(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, sys.stdout.fileno())
        os.dup2(fd, sys.stderr.fileno())
    finally:
        os.close(fd)


def reopen() -> None:
    """Reopen every file handler (after logrotate moved the files away)."""
    for logger in (error_log, access_log):
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    if handler.stream:
                        handler.stream.close()
                    handler.stream = handler._open()
                finally:
                    handler.release()
    if _captured_file is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        _redirect_to(_captured_file)
