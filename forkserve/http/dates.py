"""The Date header, formatted once per second instead of once per response.

Formatted here rather than with ``email.utils.formatdate``: importing the email package in the
master would add some 900 KB to every worker that never uses it.
"""

from __future__ import annotations

import time

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_cached_second = -1
_cached_text = ""
_cached_line = ""


def http_date(now: float | None = None) -> str:
    """IMF-fixdate for ``now`` (default: the current time), cached for the current second."""
    global _cached_second, _cached_text, _cached_line
    now = time.time() if now is None else now
    second = int(now)
    if second != _cached_second:
        _cached_text = imf_fixdate(second)
        _cached_line = f"Date: {_cached_text}\r\n"
        _cached_second = second
    return _cached_text


def date_line(now: float) -> str:
    """The whole ``Date: ...\\r\\n`` header line, ready to join into a response head."""
    if int(now) != _cached_second:
        http_date(now)
    return _cached_line


def imf_fixdate(second: int) -> str:
    """RFC 9110's preferred date format, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    t = time.gmtime(second)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")
