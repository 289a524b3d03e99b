"""The app the gunicorn config tests serve: it reports what the config file set up around it."""

from __future__ import annotations

import json
import os
import threading


def app(environ, start_response):
    """/ reports the environment variables the configs set, the scheme, the client address, the
    umask and whether the request runs on the worker's main thread."""
    mask = os.umask(0)
    os.umask(mask)
    payload = json.dumps({
        "env": {key: os.environ.get(key) for key in ("SPAM", "DJANGO_SECRET_KEY", "APP_ENV")},
        "scheme": environ["wsgi.url_scheme"],
        "remote_addr": environ.get("REMOTE_ADDR"),
        "umask": mask,
        "main_thread": threading.current_thread() is threading.main_thread(),
        "pid": os.getpid(),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]
