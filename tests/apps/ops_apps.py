"""Apps for the operations tests: queue time, StatsD, the control socket's stacks, app metrics."""

from __future__ import annotations

import ctypes
import json
import os
import time

CALLS_FILE = os.environ.get("OPS_CALLS_FILE")


def queue_echo(environ, start_response):
    """Answers with the queue-time keys of its environ (and records that it was called)."""
    if CALLS_FILE:
        with open(CALLS_FILE, "a") as calls:
            calls.write(environ["PATH_INFO"] + "\n")
    if environ["PATH_INFO"].startswith("/sleep"):
        time.sleep(float(environ.get("QUERY_STRING") or "0.2"))
    if environ["PATH_INFO"] == "/fail":
        raise RuntimeError("the app failed on purpose")
    status = "404 Not Found" if environ["PATH_INFO"] == "/missing" else "200 OK"
    body = json.dumps({
        "queue_time": environ.get("forkserve.queue_time"),
        "proxy_queue_time": environ.get("forkserve.proxy_queue_time"),
        "pid": os.getpid(),
    }).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def stuck_in_c(seconds: float) -> None:
    """Block in C for ``seconds`` holding the GIL, deaf to signals: a second lock of a held mutex,
    with a timeout (``pthread_mutex_timedlock`` never returns early for a signal), called through
    ``ctypes.PyDLL`` (which keeps the GIL). Python's signal handlers cannot run meanwhile."""
    libc = ctypes.PyDLL(None)
    mutex = ctypes.create_string_buffer(64)  # zeroed: PTHREAD_MUTEX_INITIALIZER
    libc.pthread_mutex_lock(mutex)
    deadline = time.time() + seconds
    timespec = (ctypes.c_long * 2)(int(deadline), int(deadline % 1 * 1e9))
    libc.pthread_mutex_timedlock(mutex, timespec)


def stuck(environ, start_response):
    """/c blocks in C holding the GIL (default 6 s); /sleep sleeps; anything else answers at once."""
    if environ["PATH_INFO"] == "/c":
        stuck_in_c(float(environ.get("QUERY_STRING") or "6"))
    elif environ["PATH_INFO"] == "/sleep":
        time.sleep(float(environ.get("QUERY_STRING") or "5"))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]
