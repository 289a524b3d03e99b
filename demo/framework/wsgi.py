"""The public entry point for building the WSGI application."""

from __future__ import annotations

from .handler import WSGIHandler


def get_wsgi_application() -> WSGIHandler:
    """Return the WSGI callable; middleware is loaded once, here, per process."""
    return WSGIHandler()
