"""The benchmark's own apps: as small as a WSGI app can be, so the server is what gets measured.

Every server under comparison imports these same callables (``benchmarks.apps.bench_apps:NAME``).
``download`` serves a fixed 1 MiB file through ``wsgi.file_wrapper`` so a server that uses
sendfile gets the credit for it. ``io_bound`` waits 50 ms per request, standing in for a
database or an API: what app threads are for. The file lives at a fixed path in the temp directory and is
written once (atomically) by whoever imports this module first — the runner, before any server.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

DOWNLOAD_SIZE = 1024 * 1024
READ_BLOCK = 65536
HELLO = b"Hello, world!"
IO_WAIT_S = 0.05

StartResponse = Callable[..., Any]


def hello(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The smallest useful response: 13 bytes with a Content-Length."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def io_bound(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Hello world after a 50 ms wait that holds no CPU and releases the GIL, as a query to a
    database does: a worker can only overlap such waits with threads (or more processes)."""
    time.sleep(IO_WAIT_S)
    return hello(environ, start_response)


def ensure_download_file() -> str:
    """The download's path; writes the file first if it is missing or the wrong size."""
    path = os.path.join(tempfile.gettempdir(), f"forkserve-bench-{DOWNLOAD_SIZE}.bin")
    try:
        if os.path.getsize(path) == DOWNLOAD_SIZE:
            return path
    except OSError:
        pass
    handle, partial = tempfile.mkstemp(prefix="forkserve-bench-", suffix=".part")
    with os.fdopen(handle, "wb") as file:
        file.write(bytes(range(256)) * (DOWNLOAD_SIZE // 256))
    os.replace(partial, path)
    return path


_DOWNLOAD = ensure_download_file()


def _blocks(file: BinaryIO, size: int) -> Iterator[bytes]:
    """The file in blocks, closed at the end: what an app does when the server has no
    ``wsgi.file_wrapper``."""
    with file:
        while block := file.read(size):
            yield block


def download(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """A fixed file through ``wsgi.file_wrapper``: opened per request, as a static file would be.

    The wrapper is optional in PEP 3333 (granian's WSGI has none): without it the file is read
    in 64 KiB blocks, as the PEP's own fallback does, and that server gets no sendfile credit.
    """
    file = open(_DOWNLOAD, "rb")  # noqa: SIM115 -- the server closes it through the wrapper
    length = os.fstat(file.fileno()).st_size
    start_response(
        "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(length))]
    )
    wrapper = environ.get("wsgi.file_wrapper")
    return wrapper(file, READ_BLOCK) if wrapper else _blocks(file, READ_BLOCK)


def upload(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Reads the whole request body in blocks and throws it away; answers with the byte count."""
    stream = environ["wsgi.input"]
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    received = 0
    while remaining > 0:
        block = stream.read(min(READ_BLOCK, remaining))
        if not block:
            break
        received += len(block)
        remaining -= len(block)
    body = b"received %d bytes" % received
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def hello_and_download(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """``/download`` is ``download``, anything else ``hello``: one server for the scenarios
    that mix a hello load with clients of another kind (slow readers of the 1 MiB file)."""
    if environ.get("PATH_INFO") == "/download":
        return download(environ, start_response)
    return hello(environ, start_response)
