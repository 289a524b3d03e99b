"""The request object, built lazily from a WSGI environ.

Nothing is parsed until a view asks for it, so a view that never touches
the body never reads ``wsgi.input``; that is how Django behaves and what a
server must cope with (unread bodies on keep-alive connections).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from functools import cached_property
from typing import Any, BinaryIO
from urllib.parse import parse_qsl

from .conf import settings
from .datastructures import CaseInsensitiveDict, MultiValueDict
from .exceptions import BadRequest, RequestTooLarge
from .multipart import MultipartParser, UploadedFile, parse_header

CHUNK_SIZE = 64 * 1024


def wsgi_str(value: str) -> str:
    """Recover UTF-8 text from a PEP 3333 "native string".

    WSGI servers decode raw request bytes as latin-1, so re-encoding gives
    back the wire bytes, which browsers send as UTF-8.
    """
    return value.encode("latin-1").decode("utf-8", "replace")


def _valid_charset(params: dict[str, str]) -> str:
    charset = params.get("charset") or settings.DEFAULT_CHARSET
    try:
        codecs.lookup(charset)
    except LookupError:
        raise BadRequest(f"unknown charset {charset!r}") from None
    return charset


class LimitedStream:
    """Reads the request body from ``wsgi.input`` without over-reading.

    Reading past CONTENT_LENGTH would block on a keep-alive socket or
    swallow the next request, so each read is clipped to what remains.
    With no length but ``wsgi.input_terminated`` (a de-chunked body), reads
    go on until EOF. Either way the running total is checked against the
    MAX_UPLOAD_SIZE limit, since a chunked body declares no size up front.
    """

    def __init__(self, stream: BinaryIO, length: int | None, max_size: int) -> None:
        self._stream = stream
        self._remaining = length
        self._max_size = max_size
        self._eof = False
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (everything left if negative)."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(CHUNK_SIZE), b""))
        if self._remaining is not None:
            size = min(size, self._remaining)
        if self._eof or size == 0:
            return b""
        data = self._stream.read(size)  # always with a size, as PEP 3333 allows
        if not data:
            self._eof = True
            return b""
        if self._remaining is not None:
            self._remaining -= len(data)
        self.bytes_read += len(data)
        if self.bytes_read > self._max_size:
            raise RequestTooLarge("request body exceeds MAX_UPLOAD_SIZE")
        return data


class HttpRequest:
    """One HTTP request, as views see it."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = self.META = environ
        self.method: str = environ.get("REQUEST_METHOD", "GET").upper()
        self.path_info = wsgi_str(environ.get("PATH_INFO", "")) or "/"
        self.script_name = wsgi_str(environ.get("SCRIPT_NAME", "")).rstrip("/")
        self.path = self.script_name + self.path_info
        self.headers = CaseInsensitiveDict(self._headers_from(environ))
        self.content_type, self.content_params = parse_header(
            environ.get("CONTENT_TYPE", "")
        )
        self.content_length = self._length_from(environ.get("CONTENT_LENGTH"))
        self.resolver_match: Any = None
        # Set by the handler from the resolved view; see WSGIHandler.
        self.propagate_exceptions = False
        self._stream: LimitedStream | None = None
        self._body: bytes | None = None
        self._post: MultiValueDict[str] | None = None
        self._files: MultiValueDict[UploadedFile] | None = None

    @staticmethod
    def _headers_from(environ: dict[str, Any]) -> Iterator[tuple[str, str]]:
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").title(), value
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                yield key.replace("_", "-").title(), value

    @staticmethod
    def _length_from(value: str | None) -> int | None:
        """None when absent (maybe chunked); 0 when unparseable, as Django does."""
        if value is None or value == "":
            return None
        try:
            return max(int(value), 0)
        except ValueError:
            return 0

    @property
    def scheme(self) -> str:
        return self.environ.get("wsgi.url_scheme", "http")

    def is_secure(self) -> bool:
        return self.scheme == "https"

    def get_host(self) -> str:
        """The Host header, or SERVER_NAME plus any non-default port."""
        host = self.environ.get("HTTP_HOST")
        if host:
            return host
        host = self.environ.get("SERVER_NAME", "")
        port = str(self.environ.get("SERVER_PORT", ""))
        if port and port != {"http": "80", "https": "443"}.get(self.scheme):
            host = f"{host}:{port}"
        return host

    @cached_property
    def GET(self) -> MultiValueDict[str]:
        query = wsgi_str(self.environ.get("QUERY_STRING", ""))
        return MultiValueDict(
            parse_qsl(query, keep_blank_values=True, errors="replace")
        )

    @cached_property
    def COOKIES(self) -> dict[str, str]:
        """Parse the Cookie header leniently: one bad pair must not drop the rest."""
        cookies: dict[str, str] = {}
        for pair in self.environ.get("HTTP_COOKIE", "").split(";"):
            name, eq, value = pair.partition("=")
            name, value = name.strip(), value.strip()
            if not eq or not name:
                continue
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            cookies.setdefault(name, value)
        return cookies

    @property
    def stream(self) -> LimitedStream:
        """The raw body as a bounded stream, for views that process it in chunks."""
        if self._stream is None:
            if self.content_length is not None:
                length: int | None = self.content_length
            elif self.environ.get("wsgi.input_terminated"):
                length = None  # read to EOF; the server has de-chunked the body
            else:
                length = 0  # no length and no promise of EOF: there is no body
            self._stream = LimitedStream(
                self.environ["wsgi.input"], length, settings.MAX_UPLOAD_SIZE
            )
        return self._stream

    @property
    def body(self) -> bytes:
        """The whole body, read once into memory (capped by DATA_UPLOAD_MAX_MEMORY_SIZE)."""
        if self._body is None:
            stream = self.stream
            if stream.bytes_read:
                raise RuntimeError(
                    "cannot access body after reading from request.stream"
                )
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            if self.content_length is not None and self.content_length > limit:
                raise RequestTooLarge(
                    "request body exceeds DATA_UPLOAD_MAX_MEMORY_SIZE"
                )
            chunks = []
            while chunk := stream.read(CHUNK_SIZE):
                limit -= len(chunk)
                if limit < 0:
                    raise RequestTooLarge(
                        "request body exceeds DATA_UPLOAD_MAX_MEMORY_SIZE"
                    )
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    @property
    def POST(self) -> MultiValueDict[str]:
        if self._post is None:
            self._load_form()
        assert self._post is not None
        return self._post

    @property
    def FILES(self) -> MultiValueDict[UploadedFile]:
        if self._files is None:
            self._load_form()
        assert self._files is not None
        return self._files

    def _load_form(self) -> None:
        post: MultiValueDict[str] = MultiValueDict()
        files: MultiValueDict[UploadedFile] = MultiValueDict()
        if (
            self.method == "POST"
            and self.content_type == "application/x-www-form-urlencoded"
        ):
            charset = _valid_charset(self.content_params)
            text = self.body.decode(charset, "replace")
            post = MultiValueDict(
                parse_qsl(
                    text, keep_blank_values=True, encoding=charset, errors="replace"
                )
            )
        elif self.method == "POST" and self.content_type == "multipart/form-data":
            boundary = self.content_params.get("boundary")
            if not boundary:
                raise BadRequest("multipart/form-data without a boundary")
            parser = MultipartParser(
                self.stream,  # type: ignore[arg-type]
                boundary,
                charset=_valid_charset(self.content_params),
                spool_threshold=settings.FILE_UPLOAD_MAX_MEMORY_SIZE,
                max_field_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
            )
            post, files = parser.parse()
        self._post, self._files = post, files

    def close(self) -> None:
        """Delete uploaded temp files; the handler runs this when the response closes."""
        for _, uploads in (self._files or MultiValueDict()).lists():
            for upload in uploads:
                upload.close()

    def __repr__(self) -> str:
        return f"<HttpRequest {self.method} {self.path!r}>"
