"""Small WSGI apps the end-to-end tests serve."""

from __future__ import annotations

import json
import os
import wsgiref.validate


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world!"]


def _echo(environ, start_response):
    """Echoes what it saw: method, path, query, the body's length and a few environ fields."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    payload = json.dumps({
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "body_length": len(body),
        "pid": os.getpid(),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


validated = wsgiref.validate.validator(_echo)


def factory():
    """For the module:factory() form."""
    return hello


def crash_before_headers(environ, start_response):
    if environ["PATH_INFO"] == "/boom":
        raise ValueError("boom before headers")
    return hello(environ, start_response)


not_callable = 42
