"""Access log lines: gunicorn's format atoms, or one JSON object per line.

The format is compiled once per worker: only the atoms it names are computed for each request,
and when the access log is off the worker installs no callback at all, so it costs nothing.
A line is written after the response has been sent (``ServeContext.after_request``).

Atoms (as in gunicorn): ``h`` remote address, ``l`` '-', ``u`` user (HTTP Basic), ``t`` time,
``r`` request line, ``s`` status, ``m`` method, ``U`` path, ``q`` query, ``H`` protocol, ``b``/``B``
body bytes, ``f`` referer, ``a`` user agent, ``T`` seconds, ``D`` microseconds, ``M`` milliseconds,
``L`` seconds with decimals, ``p`` <pid>, ``Q`` (forkserve's) microseconds the complete request
waited for the app, ``{name}i`` request header, ``{name}o`` response header,
``{name}e`` environ value. Unknown atoms print '-'. Text values are escaped: quotes and
backslashes get a backslash, control and non-ASCII characters become ``\\xHH`` — so a client
cannot forge a line or a field.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

from forkserve.http.requestid import ENVIRON_KEY as REQUEST_ID_KEY
from forkserve.http.response import Response

JSON_FORMAT = "json"
QUEUE_TIME_KEY = "forkserve.queue_time"  # set by forkserve.http.connection

_ATOM_NAMES = re.compile(r"%\(([^)]*)\)")
_UNSAFE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')

# (environ, response, seconds taken, pid) -> the atom's value
Atom = Callable[[dict[str, Any], Response, float, int], Any]


def escape(text: str) -> str:
    """A value safe inside a quoted log field: one line, ASCII, quotes and backslashes escaped."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return _UNSAFE.sub(_escape_char, text)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in '"\\':
        return "\\" + char
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


class _SecondCache:
    """Formats the current time once per second (strftime is not cheap)."""

    def __init__(self, render: Callable[[float], str]) -> None:
        self.render = render
        self.second = -1
        self.text = ""

    def __call__(self, now: float) -> str:
        second = int(now)
        if second != self.second:
            self.second = second
            self.text = self.render(now)
        return self.text


_common_log_time = _SecondCache(lambda now: time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(now)))
_iso_second = _SecondCache(lambda now: time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)))
_iso_offset = _SecondCache(lambda now: _utc_offset(time.localtime(now).tm_gmtoff))


def _utc_offset(seconds: int) -> str:
    sign = "+" if seconds >= 0 else "-"
    minutes = abs(seconds) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def iso_time(now: float) -> str:
    """Local time in ISO 8601 with milliseconds and the UTC offset."""
    return f"{_iso_second(now)}.{int(now % 1 * 1000):03d}{_iso_offset(now)}"


def basic_auth_user(environ: dict[str, Any]) -> str | None:
    """The user name of an HTTP Basic Authorization header, if there is one."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return None
    return decoded.partition(":")[0]


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else escape(value if isinstance(value, str) else str(value))


def _environ_text(key: str) -> Atom:
    return lambda environ, response, seconds, pid: _text(environ.get(key))


def _request_header(name: str) -> Atom:
    key = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}.get(
        name, "HTTP_" + name.upper().replace("-", "_")
    )
    return _environ_text(key)


def _response_header(name: str) -> Atom:
    def atom(environ: dict[str, Any], response: Response, seconds: float, pid: int) -> str:
        found = None
        for header in response.headers:
            if isinstance(header, tuple) and len(header) == 2 and str(header[0]).lower() == name:
                found = header[1]
        for line in response.extra_head.splitlines():  # headers the server added (request id)
            added, _, value = line.partition(": ")
            if added.lower() == name:
                found = value
        return _text(found)

    return atom


def _environ_value(name: str) -> Atom:
    def atom(environ: dict[str, Any], response: Response, seconds: float, pid: int) -> str:
        if name in environ:
            return _text(environ[name])
        lowered = name.lower()
        for key, value in environ.items():
            if key.lower() == lowered:
                return _text(value)
        return "-"

    return atom


def _request_line(environ: dict[str, Any], response: Response, seconds: float, pid: int) -> str:
    return escape(f"{environ['REQUEST_METHOD']} {environ.get('RAW_URI', '')} {environ['SERVER_PROTOCOL']}")


def _status(environ: dict[str, Any], response: Response, seconds: float, pid: int) -> str:
    return str(response.status_code) if response.status_code else "-"


_ATOMS: dict[str, Atom] = {
    "h": _environ_text("REMOTE_ADDR"),
    "l": lambda environ, response, seconds, pid: "-",
    "u": lambda environ, response, seconds, pid: _text(basic_auth_user(environ)),
    "t": lambda environ, response, seconds, pid: _common_log_time(time.time()),
    "r": _request_line,
    "s": _status,
    "m": _environ_text("REQUEST_METHOD"),
    "U": _environ_text("PATH_INFO"),
    "q": _environ_text("QUERY_STRING"),
    "H": _environ_text("SERVER_PROTOCOL"),
    "b": lambda environ, response, seconds, pid: str(response.sent),
    "B": lambda environ, response, seconds, pid: response.sent,
    "f": _environ_text("HTTP_REFERER"),
    "a": _environ_text("HTTP_USER_AGENT"),
    "T": lambda environ, response, seconds, pid: int(seconds),
    "D": lambda environ, response, seconds, pid: int(seconds * 1_000_000),
    "M": lambda environ, response, seconds, pid: int(seconds * 1000),
    "L": lambda environ, response, seconds, pid: f"{seconds:.6f}",
    "p": lambda environ, response, seconds, pid: f"<{pid}>",
    "Q": lambda environ, response, seconds, pid: int(environ.get(QUEUE_TIME_KEY, 0.0) * 1_000_000),
}


def atom_for(name: str) -> Atom:
    """The function computing one atom (unknown names give '-', as in gunicorn)."""
    if name in _ATOMS:
        return _ATOMS[name]
    if name.startswith("{") and len(name) > 3 and name[-2] == "}":
        inner, kind = name[1:-2], name[-1]
        if kind == "i":
            return _request_header(inner.lower())
        if kind == "o":
            return _response_header(inner.lower())
        if kind == "e":
            return _environ_value(inner)
    return lambda environ, response, seconds, pid: "-"


class LineFormat:
    """A compiled gunicorn-style format: computes only the atoms the format names."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.atoms = [(name, atom_for(name)) for name in dict.fromkeys(_ATOM_NAMES.findall(fmt))]
        try:
            fmt % {name: 0 for name, _ in self.atoms}
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"access_log_format {fmt!r} is not a valid format: {error}") from None

    def render(self, environ: dict[str, Any], response: Response, seconds: float, pid: int) -> str:
        values = {name: atom(environ, response, seconds, pid) for name, atom in self.atoms}
        try:
            return self.fmt % values
        except (ValueError, TypeError) as error:  # e.g. %(s)d with a '-' status
            return f"access log format error: {error}"


class JsonFormat:
    """One JSON object per line, for log pipelines."""

    def render(self, environ: dict[str, Any], response: Response, seconds: float, pid: int) -> str:
        return json.dumps({
            "time": iso_time(time.time()),
            "remote_addr": environ.get("REMOTE_ADDR") or None,
            "method": environ.get("REQUEST_METHOD"),
            "path": _readable(environ.get("PATH_INFO", "")),
            "query": _readable(environ.get("QUERY_STRING", "")),
            "protocol": environ.get("SERVER_PROTOCOL"),
            "status": response.status_code or None,
            "bytes": response.sent,
            "duration_us": int(seconds * 1_000_000),
            "queue_us": int(environ.get(QUEUE_TIME_KEY, 0.0) * 1_000_000),
            "user_agent": _readable(environ.get("HTTP_USER_AGENT")),
            "referer": _readable(environ.get("HTTP_REFERER")),
            "request_id": environ.get(REQUEST_ID_KEY),
            "pid": pid,
        })


def _readable(value: str | None) -> str | None:
    """PEP 3333 strings carry raw bytes as latin-1; show UTF-8 as text, other bytes escaped."""
    if value is None or value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return value


def compile_format(fmt: str) -> LineFormat | JsonFormat:
    """The formatter for a setting value. Raises ValueError for a broken format."""
    return JsonFormat() if fmt.strip().lower() == JSON_FORMAT else LineFormat(fmt)


def enabled(logger: logging.Logger) -> bool:
    """Does the access logger write anywhere? (accesslog set, or handlers from logconfig_dict)"""
    return logger.isEnabledFor(logging.INFO) and logger.hasHandlers()


AfterRequest = Callable[[dict[str, Any], Response, float], None]  # (environ, response, started)


def after_request_hook(fmt: str, logger: logging.Logger, then: AfterRequest | None = None) -> AfterRequest | None:
    """The ServeContext.after_request callback writing access log lines. With the log off it is
    just ``then`` (another after_request callback, e.g. the post_request hook; None for none), so
    an unused access log costs nothing; with the log on, the line is written first."""
    if not enabled(logger):
        return then
    formatter = compile_format(fmt)
    pid = os.getpid()
    render = formatter.render
    info = logger.info

    def log_request(environ: dict[str, Any], response: Response, started: float) -> None:
        info(render(environ, response, time.time() - started, pid))

    if then is None:
        return log_request

    def log_request_then(environ: dict[str, Any], response: Response, started: float) -> None:
        info(render(environ, response, time.time() - started, pid))
        then(environ, response, started)

    return log_request_then
