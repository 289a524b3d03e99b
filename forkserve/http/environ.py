"""PEP 3333: the environ a request becomes, ``wsgi.errors`` and ``wsgi.file_wrapper``.

What does not change between requests (the wsgi.* keys, server software, the listener's address)
is built once per listener and copied per request; header names map to ``HTTP_*`` keys through a
cache, so a request costs one dict copy and one loop over its headers.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import unquote_to_bytes

from forkserve import __version__
from forkserve.http.head import RequestHead
from forkserve.http.protocols import ListenerFacts
from forkserve.http.proxy import ProxyTrust

SERVER_SOFTWARE = f"forkserve/{__version__}"
error_log = logging.getLogger("forkserve.error")  # by name: forkserve.process.logs sets it up

_SPECIAL_KEYS = {b"content-type": "CONTENT_TYPE", b"content-length": None}
_header_keys: dict[bytes, str | None] = dict(_SPECIAL_KEYS)
_HEADER_KEY_CACHE_LIMIT = 2048


class ErrorStream:
    """``wsgi.errors``: text written by the app goes to the error log, a line at a time. Each app
    thread collects its own partial line, so lines from concurrent requests never mix."""

    def __init__(self) -> None:
        self._local = threading.local()

    def write(self, text: str) -> int:
        pending = getattr(self._local, "pending", "") + text
        if pending.endswith("\n"):
            error_log.error(pending[:-1])
            pending = ""
        self._local.pending = pending
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pending = getattr(self._local, "pending", "")
        if pending:
            error_log.error(pending)
            self._local.pending = ""


class FileWrapper:
    """``wsgi.file_wrapper``: iterates a file in blocks; the response sends real files with
    ``os.sendfile`` instead of iterating (see forkserve.http.response)."""

    def __init__(self, filelike: IO[bytes], blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while True:
            block = read(self.blksize)
            if not block:
                return
            yield block

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    def sendfile_span(self) -> tuple[int, int, int] | None:
        """(fd, offset, length) when the file is a regular file that sendfile can send."""
        try:
            fd = self.filelike.fileno()
            stat = os.fstat(fd)
            offset = self.filelike.tell()
        except (AttributeError, OSError, ValueError):
            return None
        import stat as stat_module

        if not stat_module.S_ISREG(stat.st_mode) or offset > stat.st_size:
            return None
        return fd, offset, stat.st_size - offset


def environ_key(name: bytes) -> str | None:
    """The environ key for a lower-case header name (None for Content-Length: framing sets it)."""
    try:
        return _header_keys[name]
    except KeyError:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if len(_header_keys) < _HEADER_KEY_CACHE_LIMIT:
            _header_keys[name] = key
        return key


def decode_path(raw_path: bytes) -> str:
    """PATH_INFO: percent-decoded bytes as latin-1 (PEP 3333's 'bytes in a str')."""
    if b"%" in raw_path:
        raw_path = unquote_to_bytes(raw_path)
    return raw_path.decode("latin-1")


class EnvironBuilder:
    """Builds environs for requests arriving on one listener."""

    def __init__(
        self, listener: ListenerFacts, proxy: ProxyTrust, header_map: str, error_stream: ErrorStream,
        scheme: str = "http", multithread: bool = False,
    ) -> None:
        self.script_name = os.environ.get("SCRIPT_NAME", "").rstrip("/")
        self.proxy = proxy
        self.drop_underscores = header_map != "dangerous"
        self.default_port = listener.server_port
        self.default_name = listener.server_name
        self._hosts: dict[bytes, tuple[str, str]] = {}  # Host header -> (SERVER_NAME, SERVER_PORT)
        self.base: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scheme,
            "wsgi.errors": error_stream,
            "wsgi.multithread": multithread,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "SCRIPT_NAME": self.script_name,
        }

    def build(self, head: RequestHead, remote_addr: str, remote_port: str, body: Any) -> dict[str, Any]:
        """The environ for one request."""
        environ = self.base.copy()
        target = head.target
        if b"#" in target:  # a fragment ends the target (RFC 3986 3.5), a "?" after it included
            target = target.split(b"#", 1)[0]
        if target[:1] != b"/":
            target = _origin_form(target)
        path, _, query = target.partition(b"?")
        path_info = path.decode("latin-1") if b"%" not in path else decode_path(path)
        script_name = self.script_name
        if script_name and (path_info == script_name or path_info.startswith(script_name + "/")):
            path_info = path_info[len(script_name):]
        environ["REQUEST_METHOD"] = head.method.decode("ascii")
        environ["PATH_INFO"] = path_info
        environ["QUERY_STRING"] = query.decode("latin-1")
        environ["RAW_URI"] = head.target.decode("latin-1")
        environ["SERVER_PROTOCOL"] = "HTTP/1.1" if head.version == b"1.1" else "HTTP/1.0"
        environ["REMOTE_ADDR"] = remote_addr
        environ["REMOTE_PORT"] = remote_port
        environ["wsgi.input"] = body
        if head.content_length is not None:
            environ["CONTENT_LENGTH"] = str(head.content_length)

        drop = self.drop_underscores
        for name, value in head.headers:
            key = _header_keys.get(name) or environ_key(name)
            if key is None or (drop and b"_" in name):
                continue
            text = value.decode("latin-1")
            if key in environ:
                separator = "; " if key == "HTTP_COOKIE" else ","
                environ[key] = environ[key] + separator + text
            else:
                environ[key] = text
        if head.host and "HTTP_HOST" in environ:
            environ["HTTP_HOST"] = head.host.decode("latin-1")

        if not self.proxy.keys.isdisjoint(environ):  # only requests with forwarding headers
            self.proxy.apply(environ)
        self._server_name_port(environ, head.host)
        return environ

    def _server_name_port(self, environ: dict[str, Any], host: bytes) -> None:
        if not host:
            environ["SERVER_NAME"] = self.default_name
            environ["SERVER_PORT"] = self.default_port
            return
        known = self._hosts.get(host)
        if known is None:
            text = host.decode("latin-1")
            if text.startswith("["):
                name, _, rest = text.partition("]")
                known = (name + "]", rest[1:])
            else:
                name, _, port = text.partition(":")
                known = (name, port)
            if len(self._hosts) < 256:  # a handful of names in practice; bounded against junk
                self._hosts[host] = known
        environ["SERVER_NAME"], port = known
        environ["SERVER_PORT"] = port or ("443" if environ["wsgi.url_scheme"] == "https" else "80")


def _origin_form(target: bytes) -> bytes:
    """``http://host/path?q`` → ``/path?q``; ``*`` stays as it is."""
    if target == b"*":
        return target
    rest = target.partition(b"://")[2]
    slash = rest.find(b"/")
    question = rest.find(b"?")
    if slash < 0 or (0 <= question < slash):
        return b"/" + rest[question:] if question >= 0 else b"/"
    return rest[slash:]
