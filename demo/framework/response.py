"""Response classes. A response object is itself the WSGI body iterable.

The handler returns the response to the server, so the server's call to
``close()`` lands here and releases whatever the response holds (open files,
generators, the request's temp files) via the registered closers.
"""

from __future__ import annotations

import io
import json
import mimetypes
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from email.utils import formatdate
from http import HTTPStatus
from http.cookies import Morsel, SimpleCookie
from time import time
from typing import Any, BinaryIO
from urllib.parse import quote

from .conf import settings
from .datastructures import CaseInsensitiveDict


class HttpResponseBase:
    """Status, headers, cookies and cleanup shared by every response type."""

    status_code = 200
    streaming = False

    def __init__(
        self,
        content_type: str | None = None,
        status: int | None = None,
        reason: str | None = None,
        charset: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if status is not None:
            self.status_code = int(status)
        self._reason = reason
        self.charset = charset or settings.DEFAULT_CHARSET
        self.headers = CaseInsensitiveDict(headers or {})
        if "Content-Type" not in self.headers:
            self.headers["Content-Type"] = (
                content_type or f"text/html; charset={self.charset}"
            )
        self.cookies: dict[str, Morsel[str]] = {}
        self._closers: list[Callable[[], object]] = []

    @property
    def reason_phrase(self) -> str:
        if self._reason:
            return self._reason
        try:
            return HTTPStatus(self.status_code).phrase
        except ValueError:
            return "Unknown Status Code"

    @property
    def status_line(self) -> str:
        """The WSGI status string, e.g. ``"404 Not Found"``."""
        return f"{self.status_code} {self.reason_phrase}"

    def __getitem__(self, name: str) -> str:
        return self.headers[name]

    def __setitem__(self, name: str, value: str) -> None:
        self.headers[name] = value

    def __contains__(self, name: str) -> bool:
        return name in self.headers

    def set_cookie(
        self,
        name: str,
        value: str = "",
        max_age: int | None = None,
        path: str = "/",
        httponly: bool = False,
        secure: bool = False,
        samesite: str | None = None,
    ) -> None:
        """Add a cookie; each one becomes its own Set-Cookie header."""
        jar: SimpleCookie = SimpleCookie()
        jar[name] = value  # SimpleCookie validates the name and quotes the value
        morsel = jar[name]
        if max_age is not None:
            morsel["max-age"] = str(int(max_age))
            # Old clients only understand Expires, so send both.
            morsel["expires"] = formatdate(time() + int(max_age), usegmt=True)
        morsel["path"] = path
        morsel["httponly"] = httponly
        morsel["secure"] = secure
        if samesite:
            morsel["samesite"] = samesite
        self.cookies[name] = morsel

    def delete_cookie(self, name: str, path: str = "/") -> None:
        """Ask the client to drop a cookie by expiring it."""
        self.set_cookie(name, "", max_age=0, path=path)

    def header_items(self) -> list[tuple[str, str]]:
        """Headers in the list-of-tuples shape ``start_response`` wants."""
        items = list(self.headers.items())
        items.extend(
            ("Set-Cookie", morsel.OutputString()) for morsel in self.cookies.values()
        )
        return items

    def add_closer(self, closer: Callable[[], object]) -> None:
        """Register cleanup to run when the server closes the body iterable."""
        self._closers.append(closer)

    def close(self) -> None:
        """Run every closer once, in order, even if an earlier one raises."""
        closers, self._closers = self._closers, []
        with ExitStack() as stack:
            for closer in reversed(closers):  # ExitStack unwinds last-in first-out
                stack.callback(closer)

    def _to_bytes(self, value: str | bytes) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        return str(value).encode(self.charset)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status_line}>"


class HttpResponse(HttpResponseBase):
    """A response whose whole body is known up front (so Content-Length is set)."""

    def __init__(
        self,
        content: str | bytes | Iterable[str | bytes] = b"",
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.content = content  # type: ignore[assignment]

    @property
    def content(self) -> bytes:
        return self._content

    @content.setter
    def content(self, value: str | bytes | Iterable[str | bytes]) -> None:
        if isinstance(value, (str, bytes, bytearray, memoryview)):
            self._content = self._to_bytes(value)
        else:
            self._content = b"".join(self._to_bytes(chunk) for chunk in value)
        self.headers["Content-Length"] = str(len(self._content))

    def __iter__(self) -> Iterator[bytes]:
        return iter((self._content,))


class HttpResponseRedirect(HttpResponse):
    status_code = 302

    def __init__(self, location: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(b"", *args, **kwargs)
        self.headers["Location"] = location


class HttpResponsePermanentRedirect(HttpResponseRedirect):
    status_code = 301


def redirect(to: str, permanent: bool = False) -> HttpResponseRedirect:
    """Redirect to a URL; 301 if ``permanent`` else 302."""
    cls = HttpResponsePermanentRedirect if permanent else HttpResponseRedirect
    return cls(to)


class HttpResponseBadRequest(HttpResponse):
    status_code = 400


class HttpResponseNotFound(HttpResponse):
    status_code = 404


class HttpResponseNotAllowed(HttpResponse):
    status_code = 405

    def __init__(
        self, permitted_methods: Iterable[str], *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.headers["Allow"] = ", ".join(permitted_methods)


class HttpResponseServerError(HttpResponse):
    status_code = 500


class JsonResponse(HttpResponse):
    """Serialise ``data`` as a UTF-8 JSON body."""

    def __init__(self, data: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("content_type", "application/json")
        super().__init__(
            json.dumps(data, ensure_ascii=False).encode("utf-8"), *args, **kwargs
        )


class StreamingHttpResponse(HttpResponseBase):
    """A body produced by an iterator, chunk by chunk, with no Content-Length.

    Chunks are handed to the server as they are produced, never collected,
    so a slow generator shows up on the wire as a slow trickle of chunks.
    """

    streaming = True

    def __init__(
        self, streaming_content: Iterable[str | bytes] = (), *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._iterator: Iterator[str | bytes] = iter(streaming_content)
        if hasattr(streaming_content, "close"):
            # Closing a generator runs its finally blocks even if abandoned midway.
            self.add_closer(streaming_content.close)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._iterator:
            yield self._to_bytes(chunk)


class FileResponse(StreamingHttpResponse):
    """Stream an open binary file, ideally through the server's file_wrapper.

    ``file_to_stream`` is what the handler gives to ``wsgi.file_wrapper``
    so the server may use sendfile(); iterating reads ``block_size`` blocks.
    """

    block_size = 64 * 1024

    def __init__(
        self,
        file: BinaryIO,
        *,
        content_type: str | None = None,
        as_attachment: bool = False,
        filename: str = "",
        **kwargs: Any,
    ) -> None:
        self.file_to_stream = file
        name = getattr(file, "name", None)  # an int (fd) for anonymous temp files
        if not filename and isinstance(name, str):
            filename = os.path.basename(name)
        if content_type is None:
            guessed = mimetypes.guess_type(filename)[0] if filename else None
            content_type = guessed or "application/octet-stream"
        super().__init__((), content_type=content_type, **kwargs)
        self.add_closer(file.close)
        size = self._remaining_size(file)
        if size is not None:
            self.headers["Content-Length"] = str(size)
        disposition = "attachment" if as_attachment else "inline"
        if filename and filename.isascii() and '"' not in filename:
            disposition += f'; filename="{filename}"'
        elif filename:
            disposition += f"; filename*=utf-8''{quote(filename)}"
        if as_attachment or filename:
            self.headers["Content-Disposition"] = disposition

    @staticmethod
    def _remaining_size(file: BinaryIO) -> int | None:
        try:
            return os.fstat(file.fileno()).st_size - file.tell()
        except (AttributeError, OSError, io.UnsupportedOperation):
            pass
        try:
            start = file.tell()
            end = file.seek(0, io.SEEK_END)
            file.seek(start)
            return end - start
        except (AttributeError, OSError):
            return None

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.file_to_stream.read(self.block_size):
            yield chunk
