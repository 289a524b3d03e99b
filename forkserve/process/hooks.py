"""Calling the user's hooks (gunicorn's names and arguments), safely.

A hook is user code running inside the master or a worker. One that raises is logged with its
traceback and otherwise ignored: a typo in ``post_fork`` must not take the whole server down.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from forkserve.process.logs import error_log
from forkserve.settings.registry import Config


class PassesThroughHooks(Exception):
    """Base of the exceptions forkserve raises *through* user code on purpose (the worker's
    request timeout): :func:`call_hook` lets them pass instead of logging them as the hook's
    failure, so a hook cannot swallow the abort of a timed-out request."""


def call_hook(config: Config, name: str, *args: Any) -> None:
    """Run hook ``name`` if the configuration defines it; log (never raise) what it raises."""
    hook = config.hook(name)
    if hook is None:
        return
    try:
        hook(*args)
    except PassesThroughHooks:
        raise
    except Exception:  # noqa: BLE001 -- a user hook must never take a forkserve process down
        error_log.exception("hook %s raised; carrying on", name)
    finally:
        _flush_stdout()


def _flush_stdout() -> None:
    """What a hook printed goes out now (a worker ends with os._exit). Never raises: a closed or
    broken stdout must not turn a hook call into a crash of the master."""
    with suppress(OSError, ValueError, AttributeError):
        sys.stdout.flush()


class HookRequest:
    """The ``req`` given to ``pre_request`` / ``post_request``: the parts of gunicorn's Request
    that hooks use (method, path, query, uri, version, headers, remote_addr), read from the environ.

    Built only when one of those hooks is configured, so requests pay nothing otherwise.
    """

    __slots__ = ("environ", "method", "path", "query", "remote_addr", "uri", "version")

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.environ = environ
        self.method: str = environ["REQUEST_METHOD"]
        self.path: str = environ["PATH_INFO"]
        self.query: str = environ["QUERY_STRING"]
        self.uri: str = environ.get("RAW_URI", self.path)
        self.version: str = environ["SERVER_PROTOCOL"]
        self.remote_addr: str = environ.get("REMOTE_ADDR", "")

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Request headers as (NAME, value) pairs, names upper-cased as gunicorn gives them."""
        pairs = [(key[5:].replace("_", "-"), value) for key, value in self.environ.items()
                 if key.startswith("HTTP_")]
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if key in self.environ:
                pairs.append((key.replace("_", "-"), self.environ[key]))
        return pairs

    def __repr__(self) -> str:
        return f"<HookRequest {self.method} {self.uri}>"
