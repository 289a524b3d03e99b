"""Apps for the logging and metrics tests."""

from __future__ import annotations

import os


def printing(environ, start_response):
    """Prints to stdout (Python) and writes to fd 2 directly, as C extensions do."""
    print(f"app printed for {environ['PATH_INFO']}")
    os.write(2, f"app wrote fd 2 for {environ['PATH_INFO']}\n".encode())
    body = b"printed\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                              ("X-App", "yes")])
    return [body]
