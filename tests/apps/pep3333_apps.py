"""Apps that exercise one PEP 3333 feature each, for tests/test_wsgi_pep3333.py.

``plain`` is the dispatcher itself; ``validated`` is the same app inside
``wsgiref.validate.validator``, so any slip of the server against PEP 3333 (environ types, input
methods, start_response, write, iteration, close) raises in the worker and fails the test.
Events the tests must see from outside (close() calls, reads of a wrapped file) are appended as
lines to the file named by ``$FORKSERVE_TEST_EVENTS``.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import wsgiref.validate
from urllib.parse import parse_qs


def event(text: str) -> None:
    """One line in the events file, in a single O_APPEND write."""
    fd = os.open(os.environ["FORKSERVE_TEST_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def _json(start_response, data, status: str = "200 OK"):
    payload = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


# -- wsgi.input ---------------------------------------------------------------------------------

def _read_input(stream, mode: str) -> list[bytes]:
    pieces: list[bytes] = []
    calls = {  # each is called until it returns b""
        "read-n": lambda: stream.read(7),
        "read-big-n": lambda: stream.read(100_000),
        "readline": stream.readline,
        "readline-size": lambda: stream.readline(5),
    }
    if mode in calls:
        pieces.extend(iter(calls[mode], b""))
    elif mode == "read-all":
        pieces.append(stream.read())
    elif mode == "read-none":
        pieces.append(stream.read(None))
    elif mode == "readlines":
        pieces.extend(stream.readlines())
    elif mode == "readlines-hint":
        while lines := stream.readlines(10):
            pieces.append(b"".join(lines))
    elif mode == "iter":
        pieces.extend(stream)
    elif mode == "mixed":
        pieces.append(stream.readline())
        pieces.append(stream.read(3))
        pieces.extend(stream.readlines())
    else:
        raise ValueError(mode)
    return pieces


def _input(environ, start_response, mode: str):
    stream = environ["wsgi.input"]
    pieces = _read_input(stream, mode)
    after = stream.read(1) + stream.readline()
    return _json(start_response, {
        "pieces": [piece.decode("latin-1") for piece in pieces],
        "after": after.decode("latin-1"),
        "content_length": environ.get("CONTENT_LENGTH"),
        "terminated": environ.get("wsgi.input_terminated"),
    })


# -- the response side --------------------------------------------------------------------------

def _write(environ, start_response, how: str):
    headers = [("Content-Type", "text/plain")]
    if how == "with-length":
        headers.append(("Content-Length", "14"))
    write = start_response("200 OK", headers)
    for piece in (b"one ", b"two ", b"three\n"):
        write(piece)
    if how == "and-iterable":
        return [b"four\n"]
    return []


def _file(environ, start_response):
    """wsgi.file_wrapper over a regular file whose reads are recorded (sendfile makes none)."""
    query = parse_qs(environ["QUERY_STRING"])
    tag = query.get("tag", ["file"])[0]

    class RecordingFile(io.FileIO):
        def read(self, size: int = -1) -> bytes:
            event(f"read {tag}")
            return super().read(size)


    handle = RecordingFile(os.environ["FORKSERVE_TEST_FILE"], "r")
    handle.seek(int(query.get("offset", ["0"])[0]))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](handle, 8192)


def _exc_info(environ, start_response, when: str):
    if when == "before-body":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("failed after start_response")
        except RuntimeError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Content-Length", "9")],
                           sys.exc_info())
            return [b"app error"]
    if when == "after-body":
        return _exc_after_body(start_response)
    if when == "twice":
        start_response("200 OK", [("Content-Type", "text/plain")])
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"never"]
    raise ValueError(when)


def _exc_after_body(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first part\n"
    try:
        raise RuntimeError("failed after the head was sent")
    except RuntimeError:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
    yield b"must never be sent\n"


class _Closing:
    """An iterable that records its close(), in each way a response can end."""

    def __init__(self, tag: str, mode: str) -> None:
        self.tag = tag
        self.mode = mode

    def __iter__(self):
        if self.mode == "raise":
            yield b"partial\n"
            raise RuntimeError(f"raised while iterating {self.tag}")
        if self.mode == "endless":
            block = b"x" * 65536
            for _ in range(100_000):  # 6 GiB over 100 s: ends early only if the server stops it
                yield block
                time.sleep(0.001)
            return
        yield b"fine\n"

    def close(self) -> None:
        event(f"close {self.tag}")


def _closing(environ, start_response, tag: str, mode: str):
    headers = [("Content-Type", "text/plain")]
    start_response("200 OK", headers)
    return _Closing(tag, mode)


def _length(environ, start_response, how: str):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    if how == "more":
        return iter([b"0123456789", b"EXTRA BYTES"])
    return iter([b"01234"])


def _errors(environ, start_response):
    errors = environ["wsgi.errors"]
    errors.write("app says: something odd happened\n")
    errors.writelines(["first of two lines\n", "second of two lines\n"])
    errors.write("unterminated note")
    errors.flush()
    return _json(start_response, {"ok": True})


def plain(environ, start_response):
    parts = environ["PATH_INFO"].strip("/").split("/")
    kind = parts[0]
    if kind == "input":
        return _input(environ, start_response, parts[1])
    if kind == "write":
        return _write(environ, start_response, parts[1])
    if kind == "file":
        return _file(environ, start_response)
    if kind == "exc":
        return _exc_info(environ, start_response, parts[1])
    if kind == "close":
        return _closing(environ, start_response, parts[1], parts[2])
    if kind == "length":
        return _length(environ, start_response, parts[1])
    if kind == "errors":
        return _errors(environ, start_response)
    if kind == "reason":
        start_response("299 Custom Reason Here", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    if kind == "head":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"a body that HEAD must not send"]
    return _json(start_response, {"unknown": kind}, "404 Not Found")


validated = wsgiref.validate.validator(plain)
