"""Demo middleware, Django new-style: a class wrapping ``get_response``.

Their headers let server tests confirm the middleware chain ran.
"""

from __future__ import annotations

import time

from .framework.handler import GetResponse
from .framework.request import HttpRequest
from .framework.response import HttpResponseBase


class TimingMiddleware:
    """Report how long the inner layers took, plus a marker header."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed_ms = (time.perf_counter() - started) * 1000
        response["X-Request-Duration-Ms"] = f"{elapsed_ms:.3f}"
        response["X-Demo-Middleware"] = "1"
        return response


class SecurityHeadersMiddleware:
    """Add ``X-Content-Type-Options: nosniff`` unless the view set it already."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response
