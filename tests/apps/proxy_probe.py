"""A WSGI app that reports what a server behind a proxy handed it, and which connection it came on.

``connection`` identifies the accepted socket the request arrived on (forkserve's documented
``forkserve.connection`` environ key: the worker's pid and the connection's serial number), so
counting distinct ``connection`` values counts the connections the server accepted, for TCP and
unix sockets alike. ``/big?size=N`` sends N bytes; every other path reports the request and
hashes its body (after sleeping ``?sleep=SECONDS``, to hold a worker busy). Wrapped in wsgiref's validator: a PEP 3333 slip fails the test.
"""

from __future__ import annotations

import hashlib
import json
import time
import wsgiref.validate
from urllib.parse import parse_qs


def connection_id(environ: dict) -> str:
    """forkserve's id of the accepted connection the request came on (``forkserve.connection``:
    the worker's pid and the connection's serial number in that worker)."""
    return environ["forkserve.connection"]


def _json(start_response, payload: dict) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _big(environ, start_response):
    size = int(parse_qs(environ["QUERY_STRING"]).get("size", ["0"])[0])
    block = bytes(range(256)) * 256
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    for offset in range(0, size, len(block)):
        yield block[: size - offset]


def _probe(environ, start_response):
    if environ["PATH_INFO"] == "/big":
        return _big(environ, start_response)
    pause = parse_qs(environ["QUERY_STRING"]).get("sleep")
    if pause:
        time.sleep(float(pause[0]))
    digest = hashlib.sha256()
    size = 0
    stream = environ["wsgi.input"]
    while block := stream.read(65536):
        digest.update(block)
        size += len(block)
    return _json(start_response, {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "remote_addr": environ["REMOTE_ADDR"],
        "remote_port": environ["REMOTE_PORT"],
        "scheme": environ["wsgi.url_scheme"],
        "host": environ.get("HTTP_HOST"),
        "x_forwarded_for": environ.get("HTTP_X_FORWARDED_FOR"),
        "x_request_id": environ.get("HTTP_X_REQUEST_ID"),
        "connection": connection_id(environ),
        "body_size": size,
        "body_sha256": digest.hexdigest(),
    })


application = wsgiref.validate.validator(_probe)
