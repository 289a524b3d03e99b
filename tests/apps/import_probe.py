"""Reports which memory-relevant modules the worker already had when it imported this app.

The app is imported in the worker, after the fork, so what it finds in ``sys.modules`` is what the
master loaded (and the workers share copy-on-write) plus the worker's own start-up.
"""

import json
import sys

WATCHED = ("_hashlib", "email.utils", "encodings.idna", "unicodedata")
LOADED_BEFORE_APP = [name for name in WATCHED if name in sys.modules]


def application(environ, start_response):
    body = json.dumps(LOADED_BEFORE_APP).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
