"""A WSGI app for the supervision tests: it can sleep, grow, crash, and report who imported it.

``/sleep?seconds=S&mark=PATH`` writes PATH when it starts sleeping, so a test knows the request
is inside the app.

At import it reads two optional files named by the environment, so a test can change the code's
behaviour between reloads without editing Python:
- ``SUPERVISION_APP_VERSION_FILE``: its text is served by ``/version`` (shows a fresh import);
- ``SUPERVISION_APP_FAIL_FILE``: if the file exists, the import fails: ``raise`` raises, ``exit``
  calls ``os._exit(1)`` (a worker that dies instantly).

``SUPERVISION_APP_IMPORT_SECONDS`` makes every import take that long (an app slow to boot, such
as a large Django project).
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from urllib.parse import parse_qs

IMPORTED_IN = os.getpid()


def _read(variable: str) -> str | None:
    path = os.environ.get(variable)
    if not path or not os.path.exists(path):
        return None
    with open(path) as handle:
        return handle.read().strip()


VERSION = _read("SUPERVISION_APP_VERSION_FILE") or "none"
_failure = _read("SUPERVISION_APP_FAIL_FILE")
if _failure == "exit":
    os._exit(1)
if _failure is not None:
    raise RuntimeError("supervision_app is broken on purpose")

time.sleep(float(os.environ.get("SUPERVISION_APP_IMPORT_SECONDS") or 0))

_retained: list[bytes] = []


def _reply(start_response, body: bytes, status: str = "200 OK"):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    query = {key: values[0] for key, values in parse_qs(environ["QUERY_STRING"]).items()}
    if path == "/hello":
        return _reply(start_response, b"hello\n")
    if path == "/version":
        environ["wsgi.input"].read()  # a POST body is read (its client may make us wait)
        info = {"version": VERSION, "greeting": os.environ.get("GREETING", ""),
                "imported_in": IMPORTED_IN, "pid": os.getpid()}
        return _reply(start_response, json.dumps(info).encode())
    if path == "/sleep":
        if "mark" in query:  # tells the test the request is in the app now
            with open(query["mark"], "w") as handle:
                handle.write(str(os.getpid()))
        time.sleep(float(query.get("seconds", "1")))
        return _reply(start_response, b"slept\n")
    if path == "/grow":
        _retained.append(b"x" * (int(query.get("mb", "10")) * 1024 * 1024))
        return _reply(start_response, b"grew\n")
    if path == "/segfault":
        ctypes.string_at(0)
    if path == "/exit":
        os._exit(int(query.get("code", "7")))
    return _reply(start_response, b"not found\n", "404 Not Found")
