"""The fuzzer's app (tests/fuzz): records every request it is handed, for the differential oracle.

Several fuzzing clients share one server, so a shared record file would mix their requests. Each
hit is instead appended to ``$FORKSERVE_FUZZ_HITS/<REMOTE_PORT>``: a client knows its own port and
reads (then removes) exactly its connection's records. Two JSON lines per request: the head as the
environ shows it, written *before* the body is read (so a request refused while its body streams
in still counts as having reached the app), then the body (base64) once all of it came, or null
when the path asked the app to leave it unread (``/noread``) or read only part of it (``/part``:
3 bytes; ``/line``: one line), which the server must then drain before the next request. The answer is an
empty 200, the same bytes for HEAD and GET, so the client needs no method to frame it.
``/__probe`` answers ``probe`` and records nothing: the client's check that a connection (or the
server) still serves.
"""

from __future__ import annotations

import base64
import json
import os

_HEAD_KEYS = ("REQUEST_METHOD", "RAW_URI", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH")


def _append(environ: dict, entry: dict) -> None:
    path = os.path.join(os.environ["FORKSERVE_FUZZ_HITS"], environ["REMOTE_PORT"])
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/__probe":
        start_response("200 OK", [("Content-Length", "5")])
        return [b"probe"]
    head = {key: value for key, value in environ.items() if key in _HEAD_KEYS or key.startswith("HTTP_")}
    _append(environ, {"head": head})
    stream, path, body = environ["wsgi.input"], environ["PATH_INFO"], None
    if "/part" in path:  # read a little; the server drains the rest (or closes)
        stream.read(3)
    elif "/line" in path:
        stream.readline()
    elif "/noread" not in path:
        body = base64.b64encode(stream.read()).decode()
    _append(environ, {"body": body})
    start_response("200 OK", [("Content-Length", "0")])
    return [b""]
