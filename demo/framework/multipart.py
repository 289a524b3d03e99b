"""A small streaming parser for ``multipart/form-data`` request bodies.

The stdlib ``cgi`` module is gone (Python 3.13), and the ``email`` parser
wants the whole body in memory. This parser reads the body in fixed-size
chunks, keeps only enough bytes buffered to spot a boundary that straddles
two reads, and spools file parts to ``SpooledTemporaryFile`` so a large
upload never sits in memory in full.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from tempfile import SpooledTemporaryFile
from typing import BinaryIO

from .datastructures import MultiValueDict
from .exceptions import BadRequest, RequestTooLarge

CHUNK_SIZE = 64 * 1024
MAX_HEADER_LINE = 8 * 1024
MAX_PART_HEADERS = 32

_PARAM_RE = re.compile(r';\s*([^\s;=]+)\s*=\s*("[^"]*"|[^;]*)')


class MultipartError(BadRequest):
    """The multipart body does not follow the format; answered with 400."""


def parse_header(value: str) -> tuple[str, dict[str, str]]:
    """Split ``type/sub; a=1; b="x y"`` into ``("type/sub", {"a": "1", "b": "x y"})``.

    Quotes are stripped but backslashes are kept literally: browsers escape
    ``"`` as ``%22`` in filenames and send Windows paths with raw backslashes.
    """
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM_RE.finditer(";" + rest):
        param = match.group(2).strip()
        if len(param) >= 2 and param[0] == param[-1] == '"':
            param = param[1:-1]
        params[match.group(1).lower()] = param
    return main.strip().lower(), params


class UploadedFile:
    """A file part of a multipart request, held in a spooled temporary file."""

    def __init__(
        self,
        field_name: str,
        filename: str,
        content_type: str,
        file: BinaryIO,
        size: int,
    ) -> None:
        self.field_name = field_name
        self.filename = filename
        self.content_type = content_type
        self.file = file
        self.size = size

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the content from the start in bounded pieces."""
        self.file.seek(0)
        while chunk := self.file.read(chunk_size):
            yield chunk

    def read(self, size: int = -1) -> bytes:
        """Read from the current position, like a file."""
        return self.file.read(size)

    def close(self) -> None:
        """Release the temporary file (deleting it if it was spooled to disk)."""
        self.file.close()

    def __repr__(self) -> str:
        return f"<UploadedFile {self.filename!r} ({self.size} bytes)>"


class _Reader:
    """Just enough buffering over a byte stream to find delimiters in it."""

    def __init__(self, stream: BinaryIO, chunk_size: int, prefix: bytes = b"") -> None:
        self._stream = stream
        self._chunk_size = chunk_size
        self._buf = prefix

    def _fill(self) -> None:
        data = self._stream.read(self._chunk_size)
        if not data:
            raise MultipartError("multipart body ended before the closing boundary")
        self._buf += data

    def read_exact(self, size: int) -> bytes:
        while len(self._buf) < size:
            self._fill()
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def read_line(self) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > MAX_HEADER_LINE:
                raise MultipartError("multipart header line too long")
            self._fill()
        line, self._buf = self._buf[:end], self._buf[end + 2 :]
        return line

    def iter_until(self, delimiter: bytes) -> Iterator[bytes]:
        """Yield the bytes before ``delimiter``, then consume the delimiter.

        The tail that could be the start of a split delimiter is held back
        until the next read settles whether it is data or not.
        """
        keep = len(delimiter) - 1
        while True:
            found = self._buf.find(delimiter)
            if found >= 0:
                data, self._buf = self._buf[:found], self._buf[found + len(delimiter) :]
                if data:
                    yield data
                return
            if len(self._buf) > keep:
                data, self._buf = self._buf[:-keep], self._buf[-keep:]
                yield data
            self._fill()

    def drain(self) -> None:
        """Discard the epilogue so the whole declared body has been consumed."""
        self._buf = b""
        while self._stream.read(self._chunk_size):
            pass


class MultipartParser:
    """Parse a multipart body into form fields and uploaded files."""

    def __init__(
        self,
        stream: BinaryIO,
        boundary: str,
        *,
        charset: str = "utf-8",
        spool_threshold: int = 1024 * 1024,
        max_field_bytes: int = 2_621_440,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if not 1 <= len(boundary) <= 70:
            raise MultipartError("invalid multipart boundary")
        self._stream = stream
        # A leading CRLF lets the first boundary be matched like all the others.
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._charset = charset
        self._spool_threshold = spool_threshold
        self._field_budget = max_field_bytes
        self._chunk_size = chunk_size

    def parse(self) -> tuple[MultiValueDict[str], MultiValueDict[UploadedFile]]:
        """Read the whole body; on failure any spooled files are closed."""
        fields: MultiValueDict[str] = MultiValueDict()
        files: MultiValueDict[UploadedFile] = MultiValueDict()
        reader = _Reader(self._stream, self._chunk_size, prefix=b"\r\n")
        try:
            for _ in reader.iter_until(self._delimiter):
                pass  # preamble
            while True:
                after = reader.read_exact(2)
                if after == b"--":
                    reader.drain()
                    return fields, files
                if after != b"\r\n":
                    raise MultipartError("malformed multipart boundary line")
                self._parse_part(reader, fields, files)
        except BaseException:
            for _, uploads in files.lists():
                for upload in uploads:
                    upload.close()
            raise

    def _parse_part(
        self,
        reader: _Reader,
        fields: MultiValueDict[str],
        files: MultiValueDict[UploadedFile],
    ) -> None:
        headers: dict[str, str] = {}
        while line := reader.read_line():
            if len(headers) >= MAX_PART_HEADERS:
                raise MultipartError("too many headers in multipart part")
            name, colon, value = line.decode(self._charset, "replace").partition(":")
            if not colon:
                raise MultipartError("malformed multipart part header")
            headers[name.strip().lower()] = value.strip()
        _, disposition = parse_header(headers.get("content-disposition", ""))
        name = disposition.get("name")
        body = reader.iter_until(self._delimiter)
        if name is None or disposition.get("filename") == "":
            # Unnamed part, or a file input left empty by the browser.
            for _ in body:
                pass
        elif "filename" in disposition:
            filename = os.path.basename(disposition["filename"].replace("\\", "/"))
            content_type = headers.get("content-type", "application/octet-stream")
            files.appendlist(name, self._spool(name, filename, content_type, body))
        else:
            fields.appendlist(name, self._read_field(body))

    def _spool(
        self, name: str, filename: str, content_type: str, body: Iterator[bytes]
    ) -> UploadedFile:
        # The file outlives this call: the UploadedFile owns and closes it.
        spooled = SpooledTemporaryFile(max_size=self._spool_threshold)  # noqa: SIM115
        size = 0
        try:
            for chunk in body:
                spooled.write(chunk)
                size += len(chunk)
        except BaseException:
            spooled.close()
            raise
        spooled.seek(0)
        return UploadedFile(name, filename, content_type, spooled, size)  # type: ignore[arg-type]

    def _read_field(self, body: Iterator[bytes]) -> str:
        parts = []
        for chunk in body:
            self._field_budget -= len(chunk)
            if self._field_budget < 0:
                raise RequestTooLarge("form fields exceed DATA_UPLOAD_MAX_MEMORY_SIZE")
            parts.append(chunk)
        return b"".join(parts).decode(self._charset, "replace")
