"""The Date header, formatted once per second instead of once per response."""

from __future__ import annotations

import time
from email.utils import formatdate

_cached_second = -1
_cached_text = ""
_cached_line = ""


def http_date(now: float | None = None) -> str:
    """IMF-fixdate for ``now`` (default: the current time), cached for the current second."""
    global _cached_second, _cached_text, _cached_line
    now = time.time() if now is None else now
    second = int(now)
    if second != _cached_second:
        _cached_text = formatdate(second, usegmt=True)
        _cached_line = f"Date: {_cached_text}\r\n"
        _cached_second = second
    return _cached_text


def date_line(now: float) -> str:
    """The whole ``Date: ...\\r\\n`` header line, ready to join into a response head."""
    if int(now) != _cached_second:
        http_date(now)
    return _cached_line
