"""Apps for the process-model tests: they report what the worker process looks like from inside."""

from __future__ import annotations

import json
import os
import time


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def inside(environ, start_response):
    """/ reports the worker's identity, umask and environment; /sleep?seconds=S sleeps;
    /log?text=T writes T to wsgi.errors (the error log)."""
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    if path == "/sleep":
        time.sleep(float(query.partition("=")[2] or 1))
    if path == "/log":
        environ["wsgi.errors"].write(query.partition("=")[2] + "\n")
    payload = json.dumps({
        "pid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "umask": _umask(),
        "env": {key: value for key, value in os.environ.items()
                if key.startswith(("FORKSERVE_TEST", "LISTEN_"))},
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]
