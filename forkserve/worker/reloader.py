"""``--reload``: restart a worker when a source file of the app changes (development only).

Design: each worker watches for itself, in its monitor thread, once a second, the files of the
modules *it* imported — only the worker knows which those are, and the master never imports the
app — minus the standard library, site-packages and forkserve itself, plus
``reload_extra_files``. On a change the worker sends itself TERM: it finishes the request in hand
and exits, and the master forks a fresh worker that imports the new code. Nothing in the master
changes, and no request is cut off.

An edit that breaks the import does not stop the server (as a boot failure does outside
development): the worker serves a 500 page with the error and watches the files named in the
traceback, so saving the fix brings the app back — the ``runserver`` experience.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from forkserve.process.loader import AppLoadError, library_roots
from forkserve.process.logs import error_log

# The files named by the import error this worker is showing, with their mtimes at the failure,
# so a fix saved before the monitor thread's first look still counts as a change.
_load_error_files: dict[str, int | None] = {}


class Reloader:
    """Remembers the mtime of each watched file when first seen; reports the first that changes."""

    def __init__(self, extra_files: Iterable[str] = ()) -> None:
        self.library_roots = library_roots()
        self.extra_files = [os.path.abspath(path) for path in extra_files]
        self.module_files: dict[str, str | None] = {}  # module name -> watched file, or None
        self.mtimes: dict[str, int | None] = dict(_load_error_files)

    def is_app_file(self, path: str | None) -> bool:
        """A Python source file on disk outside the library roots."""
        if not path or not path.endswith(".py") or not os.path.isabs(path):
            return False
        return not os.path.realpath(path).startswith(self.library_roots)

    def watched(self) -> list[str]:
        """The files watched now: imported app modules (new imports included), extras, error files."""
        for name, module in list(sys.modules.items()):
            if name not in self.module_files:
                path = getattr(module, "__file__", None)
                self.module_files[name] = path if self.is_app_file(path) else None
        files = [path for path in self.module_files.values() if path]
        return files + self.extra_files + list(_load_error_files)

    def changed(self) -> str | None:
        """The first watched file whose mtime differs from when it was first seen, else None."""
        for path in self.watched():
            mtime = _mtime(path)
            if self.mtimes.setdefault(path, mtime) != mtime:
                return path
        return None


def _mtime(path: str) -> int | None:
    """The file's mtime in ns; None when it is missing (appearing again counts as a change)."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _error_files(error: BaseException, reloader: Reloader) -> list[str]:
    """The app's own files named by an import error (its traceback, a SyntaxError's file)."""
    files: list[str] = []
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, SyntaxError) and current.filename:
            files.append(os.path.abspath(current.filename))
        tb = current.__traceback__
        while tb is not None:
            files.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        current = current.__cause__ or current.__context__
    return list(dict.fromkeys(path for path in files if reloader.is_app_file(path) and os.path.exists(path)))


def app_for_load_error(error: AppLoadError) -> Callable[..., Any] | None:
    """In a --reload worker whose app failed to import: an app showing the error, or None.

    None when the error names none of the app's files (a typo in the app spec, say): nothing to
    watch, so the usual boot failure, which stops the server, is the right answer.
    """
    files = _error_files(error, Reloader())
    if not files:
        return None
    _load_error_files.clear()
    _load_error_files.update((path, _mtime(path)) for path in files)
    text = str(error)
    error_log.error("the app failed to load; waiting for a change to %s:\n%s", ", ".join(files), text)
    body = f"forkserve --reload: the app failed to load. Save a fix and it reloads.\n\n{text}\n".encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]

    def show_load_error(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("500 Internal Server Error", headers)
        return [body]

    return show_load_error
