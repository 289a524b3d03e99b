"""The error log and the access log.

The error log goes to stderr ('-') or a file, lines shaped ``[time] [pid] [LEVEL] message``.
Files are reopened on USR1 (logrotate); the reopen happens in the main loop, never in a signal
handler.
"""

from __future__ import annotations

import logging
import logging.config
import sys
import time

from forkserve.config import Config

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


def setup(config: Config) -> None:
    """Configure both logs from the settings (logconfig_dict, when given, has the last word)."""
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
        access_handler = _handler_for(config.accesslog, sys.stdout)
        access_handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(access_handler)
        access_log.setLevel(logging.INFO)
    else:
        access_log.setLevel(logging.CRITICAL + 1)

    if config.logconfig_dict:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False, **config.logconfig_dict})


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
