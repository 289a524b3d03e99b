"""The chaos suite's app: every answer proves which request it belongs to.

``/download`` is the benchmarks' fixed 1 MiB file (for slow readers). Anything else echoes
(after waiting ``CHAOS_APP_DELAY`` seconds when that is set: an I/O-bound app): the
request's id (the ``id`` query parameter), the SHA-256 and length of the body it received, then
the body itself. A client that checks the whole answer against what it sent catches a lost, cut,
mixed-up (another request's answer) or corrupted request, not just a bad status. The
``X-Remote-Addr`` header says which client the app was told it serves (``REMOTE_ADDR``): behind a
PROXY header or in a uwsgi packet that is the address the client sent, which the load checks too.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from typing import Any

from benchmarks.apps.bench_apps import READ_BLOCK, StartResponse, download

DELAY = float(os.environ.get("CHAOS_APP_DELAY") or 0)


def expected_answer(request_id: str, body: bytes) -> bytes:
    """The exact response body the app sends for a request with this id and body."""
    digest = hashlib.sha256(body).hexdigest()
    return f"id={request_id} sha256={digest} length={len(body)}\n".encode() + body


def _read_body(environ: dict[str, Any]) -> bytes:
    stream = environ["wsgi.input"]
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    parts = []
    while remaining > 0:
        block = stream.read(min(READ_BLOCK, remaining))
        if not block:
            break
        parts.append(block)
        remaining -= len(block)
    return b"".join(parts)


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Echo id, digest and body (see the module docstring); ``/download`` is 1 MiB."""
    if environ.get("PATH_INFO") == "/download":
        return download(environ, start_response)
    query = environ.get("QUERY_STRING", "")
    request_id = next((part[3:] for part in query.split("&") if part.startswith("id=")), "")
    answer = expected_answer(request_id, _read_body(environ))
    if DELAY:
        time.sleep(DELAY)  # waiting on a database or an API
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(answer))),
                              ("X-Remote-Addr", environ.get("REMOTE_ADDR", ""))])
    return [answer]
