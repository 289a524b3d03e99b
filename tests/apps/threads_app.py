"""A WSGI app for the app-thread tests: which thread ran a request, and requests that meet.

- ``/meet?N[,SECONDS]``: waits (at most 5 s) until N requests are inside the app at the same
  time — only a worker running N app threads at once lets them meet; answers ``met`` or, alone,
  a 504;
- ``/spin?SECONDS``: a Python loop (interruptible at any bytecode) for that long;
- ``/sleep?SECONDS``: ``time.sleep`` (a C call: not interruptible until it returns);
- ``/errors?N``: writes N lines to ``wsgi.errors``, in pieces;
- anything else: the thread's name and the worker's pid.
"""

from __future__ import annotations

import json
import os
import threading
import time

time.sleep(float(os.environ.get("THREADS_APP_IMPORT_SECONDS") or 0))  # an app slow to boot
_lock = threading.Lock()
_barriers: dict[int, threading.Barrier] = {}


def _reply(start_response, body: bytes, status: str = "200 OK") -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path, query = environ["PATH_INFO"], environ["QUERY_STRING"]
    if path == "/meet":
        parties, _, seconds = query.partition(",")
        parties = int(parties)
        with _lock:
            barrier = _barriers.setdefault(parties, threading.Barrier(parties))
        try:
            barrier.wait(float(seconds or 5))
        except threading.BrokenBarrierError:
            with _lock:
                _barriers.pop(parties, None)
            return _reply(start_response, b"alone", "504 Gateway Timeout")
        return _reply(start_response, b"met")
    if path == "/spin":
        until = time.monotonic() + float(query)
        while time.monotonic() < until:
            pass
        return _reply(start_response, b"spun")
    if path == "/sleep":
        time.sleep(float(query))
        return _reply(start_response, b"slept")
    if path == "/errors":
        stream = environ["wsgi.errors"]
        marker = environ.get("HTTP_X_MARK", "m")
        for number in range(int(query)):
            stream.write(f"{marker} line {number} ")
            time.sleep(0)
            stream.write(f"of {marker}\n")
        return _reply(start_response, b"written")
    payload = {"thread": threading.current_thread().name, "pid": os.getpid()}
    return _reply(start_response, json.dumps(payload).encode())
