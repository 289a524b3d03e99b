"""A WSGI app for the worker-loop tests: what the request looked like when the app got it.

- ``/input``: reads ``wsgi.input`` whole and answers JSON: its length, a hash, the input's type,
  and where its file lives (``/proc/self/fd`` of a temporary file) when it is one;
- ``/sleep?SECONDS``: sleeps, then answers ``slept``;
- ``/file?BYTES``: answers that many bytes of a temporary file through ``wsgi.file_wrapper``;
- ``/queue``: answers the request's ``forkserve.queue_time`` and ``forkserve.connection``;
- anything else: ``ok``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time


def _json(start_response, payload: dict) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _where(stream) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{stream.fileno()}")
    except (AttributeError, OSError, ValueError):
        return None


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/input":
        stream = environ["wsgi.input"]
        where = _where(stream)
        body = stream.read()
        return _json(start_response, {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                                      "type": type(stream).__name__, "file": where})
    if path == "/sleep":
        time.sleep(float(environ["QUERY_STRING"] or "0.5"))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"slept"]
    if path == "/file":
        size = int(environ["QUERY_STRING"])
        handle = tempfile.TemporaryFile()  # noqa: SIM115 -- the file wrapper closes it
        handle.write(b"f" * size)
        handle.seek(0)
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](handle)
    if path == "/queue":
        return _json(start_response, {"queue_time": environ.get("forkserve.queue_time"),
                                      "connection": environ.get("forkserve.connection")})
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
