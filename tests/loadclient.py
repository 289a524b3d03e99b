"""A bounded concurrent client loop for the supervision tests.

A few threads send one request per new connection (``Connection: close``, like a proxy that
does not reuse upstream connections) until told to stop or a time limit passes, and record every
failure with its cause. Behaviour that promises "no request lost" is checked by ``failures``
being empty while the server is reloaded, upgraded or recycled under this load.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Callable
from typing import Self

from conftest import wait_for


class LoadLoop:
    """``with LoadLoop(server.connect) as load: ...``; then assert ``load.failures == []``."""

    def __init__(self, connect: Callable[[float], socket.socket], path: str = "/hello",
                 threads: int = 2, max_seconds: float = 60.0, pause: float = 0.002) -> None:
        self.connect = connect
        self.request = f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.deadline = time.monotonic() + max_seconds
        self.pause = pause
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[str] = []
        self.bodies: collections.Counter[bytes] = collections.Counter()

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(30)

    def wait_ok(self, more: int, timeout: float = 20.0) -> None:
        """Wait until ``more`` further requests have succeeded."""
        target = self.ok + more
        wait_for(lambda: self.ok >= target or self.failures, timeout, message=f"{more} more requests")

    def _run(self) -> None:
        while not self.stopped.is_set() and time.monotonic() < self.deadline:
            try:
                reply = self._exchange()
            except OSError as error:
                self._record(None, f"{type(error).__name__}: {error}")
            else:
                head, _, body = reply.partition(b"\r\n\r\n")
                if head.startswith(b"HTTP/1.1 200 "):
                    self._record(body, None)
                else:
                    self._record(None, f"bad reply: {reply[:80]!r}")
            time.sleep(self.pause)

    def _exchange(self) -> bytes:
        with self.connect(10.0) as sock:
            sock.sendall(self.request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def _record(self, body: bytes | None, failure: str | None) -> None:
        with self.lock:
            if failure is None:
                self.ok += 1
                self.bodies[body or b""] += 1
            else:
                self.failures.append(failure)
