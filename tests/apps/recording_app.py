"""An app that records every request it is handed, for tests that must know whether a request
reached the app at all (the request-case corpus, the proxy-trust tests).

Each hit appends one JSON line to the file named by ``$FORKSERVE_TEST_HITS`` (if set) *before* the
body is read, so a request refused while its body streams in still counts as having reached the app.
Paths steer the behaviour:

- ``/__probe`` answers ``probe`` without recording (used to check a connection is still usable);
- ``/sleep?SECONDS`` sleeps (default 0.5 s), then answers ``slept``;
- ``/environ`` answers the environ's text fields as JSON;
- ``/noread/...`` records and answers without touching ``wsgi.input``;
- ``/stream`` answers two chunks without a Content-Length (chunked on 1.1, close-delimited
  on 1.0);
- ``/respond/CODE`` answers with that status and a body, which the server must drop for
  1xx/204/304 and HEAD;
- anything else reads the whole body and answers JSON ``{"body": ..., "length": ...}``.
"""

from __future__ import annotations

import json
import os
import time


def _fields(environ: dict) -> dict:
    fields = {key: value for key, value in environ.items() if isinstance(value, str)}
    fields["wsgi.input_terminated"] = environ.get("wsgi.input_terminated")
    fields["pid"] = os.getpid()
    return fields


def _record(environ: dict) -> None:
    target = os.environ.get("FORKSERVE_TEST_HITS")
    if not target:
        return
    line = (json.dumps(_fields(environ), sort_keys=True) + "\n").encode()
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one O_APPEND write: lines from several workers never interleave
    finally:
        os.close(fd)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/__probe":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"probe"]
    _record(environ)
    if path == "/sleep":
        time.sleep(float(environ["QUERY_STRING"] or "0.5"))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"slept"]
    if path == "/environ":
        payload = json.dumps(_fields(environ), sort_keys=True).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]
    if path == "/big":
        size = int(environ["QUERY_STRING"])
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return [b"x" * size]
    if path.startswith("/noread"):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        return [b"unread"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"part one\n", b"part two\n"])
    if path.startswith("/respond/"):
        code = path.split("/")[2]
        start_response(f"{code} Chosen", [("Content-Type", "text/plain")])
        return [b"this body must not reach a client for 1xx, 204, 304 or HEAD"]
    body = environ["wsgi.input"].read()
    payload = json.dumps({"body": body.decode("latin-1"), "length": len(body)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]
