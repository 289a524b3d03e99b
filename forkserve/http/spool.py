"""A buffered request body: in memory up to a threshold, then in a temporary file.

With request buffering on (the default, as in nginx) the worker's loop reads the whole body
before the app is called, so a client that trickles an upload holds a buffer, not the worker.
Small bodies stay in memory; a larger one is spooled to an unnamed temporary file in
``worker_tmp_dir`` (the system's temporary directory by default), which disappears when closed.
The app reads it as ``wsgi.input``: an ``io.BytesIO`` or the file, both with every PEP 3333
method, ending at the end of the body.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from typing import IO


class BodySpool:
    """Collects one body's bytes; :meth:`input` hands them to the app as a file."""

    __slots__ = ("file", "memory", "memory_limit", "size", "tmp_dir")

    def __init__(self, memory_limit: int, tmp_dir: str | None) -> None:
        self.memory_limit = memory_limit
        self.tmp_dir = tmp_dir
        self.memory = bytearray()
        self.file: IO[bytes] | None = None
        self.size = 0

    def write(self, data: bytes) -> None:
        """Append body bytes; past the memory threshold they go to a temporary file."""
        if not data:
            return
        self.size += len(data)
        if self.file is not None:
            self.file.write(data)
            return
        self.memory += data
        if len(self.memory) > self.memory_limit:
            self.file = tempfile.TemporaryFile(dir=self.tmp_dir)  # noqa: SIM115 -- closed by close()
            self.file.write(self.memory)
            self.memory = bytearray()

    @property
    def on_disk(self) -> bool:
        return self.file is not None

    def input(self) -> IO[bytes]:
        """The body as ``wsgi.input``, positioned at its start."""
        if self.file is not None:
            self.file.flush()
            self.file.seek(0)
            return self.file
        return io.BytesIO(self.memory)

    def close(self) -> None:
        """Drop the bytes (the temporary file is deleted as it closes)."""
        if self.file is not None:
            self.file.close()
            self.file = None
        self.memory = bytearray()


class EmptyInput:
    """``wsgi.input`` of a request without a body: one shared, stateless instance."""

    __slots__ = ()

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


EMPTY_INPUT = EmptyInput()
