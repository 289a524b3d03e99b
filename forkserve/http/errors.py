"""Protocol errors and the replies they get.

An :class:`HttpError` carries the status the client gets and a reason for the log. The reply is
short, has a reason phrase, and always closes the connection: after a framing error the server
cannot know where the next request would start.
"""

from __future__ import annotations

from http import HTTPStatus

from forkserve.http.dates import http_date


class HttpError(Exception):
    """A request the server refuses: ``status`` for the client, ``reason`` for the log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ClientTimeout(HttpError):
    """The client was too slow sending the head or the body (408)."""

    def __init__(self, reason: str) -> None:
        super().__init__(408, reason)


class ClientDisconnected(Exception):
    """The client went away in the middle of a request; nothing can be answered."""


def reason_phrase(status: int) -> str:
    """The standard phrase for a status code, or 'Unknown' for codes without one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def error_reply(status: int, detail: str = "") -> bytes:
    """A complete, short, connection-closing response for a refused request."""
    phrase = reason_phrase(status)
    body = f"{status} {phrase}\n{detail}\n" if detail else f"{status} {phrase}\n"
    payload = body.encode("latin-1", "replace")
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        f"Date: {http_date()}\r\n"
        "Server: forkserve\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + payload
