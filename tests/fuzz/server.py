"""The forkserve process the fuzzer talks to: one per test module or long run, never one per case.

Started through ``conftest.Server`` (its own process group, killed whole at the end) with short
header/body timeouts, so a stalled case costs about a second, and with limits well under h11's
16 KiB head so the long-line mutations reach them cheaply. Forwarding headers are trusted from
nobody: a trusted ``X-Forwarded-For`` would rewrite ``REMOTE_PORT``, which names the fuzz app's
record file for each connection. ``parser`` is its ``--http-parser`` (the flag is left out for the
default, so an old checkout's forkserve, which has no such flag, still runs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from conftest import APPS, Server, children_of, free_port

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
KEEPALIVE = 4.0  # longer than a case's wait, so a connection wrongly kept open shows as one
SERVER_ARGS = (
    "--header-timeout", str(HEADER_TIMEOUT),
    "--body-timeout", str(BODY_TIMEOUT),
    "--keep-alive", str(KEEPALIVE),
    "--limit-request-line", "1024",
    "--limit-request-fields", "30",
    "--limit-request-field-size", "1024",
    "--limit-request-body", "4096",
    "--forwarded-allow-ips", "192.0.2.1",
    "--graceful-timeout", "3",
    "fuzz_app:app",
)


class FuzzServer:
    """A running forkserve with the fuzz app, its record directory and its log."""

    def __init__(self, workers: int, directory: Path, root: Path | None = None, parser: str = "h11") -> None:
        self.hits = directory / "hits"
        self.hits.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.address = ("127.0.0.1", port)
        env = {"FORKSERVE_FUZZ_HITS": str(self.hits)}
        if root is not None:  # another checkout's forkserve (python -m puts the cwd first)
            env["PYTHONPATH"] = os.pathsep.join([str(root), str(APPS)])
        choice = ["--http-parser", parser] if parser != "h11" else []
        self.server = Server(["-b", f"127.0.0.1:{port}", "-w", str(workers), *choice, *SERVER_ARGS], env=env,
                             cwd=root, address=self.address)
        self.pid = self.server.pid
        self.workers = workers
        self.parser = parser

    @classmethod
    @contextlib.contextmanager
    def running(cls, workers: int, directory: Path, root: Path | None = None,
                parser: str = "h11") -> Iterator[FuzzServer]:
        """Start it, wait until every worker is up, and always stop it (and its group). ``root``:
        run the forkserve of another checkout, e.g. an old commit to see the fuzzer find a bug."""
        server = cls(workers, directory, root, parser)
        try:
            server.server.wait_ready()
            server.server.wait_workers(workers)
            shutil.rmtree(server.hits)  # the readiness check's record
            server.hits.mkdir()
            yield server
        finally:
            server.server.stop()

    @property
    def log_path(self) -> str:
        return self.server.log_file.name

    def worker_pids(self) -> frozenset[int]:
        return frozenset(children_of(self.pid))

    def alive(self) -> bool:
        return self.server.process.poll() is None

    def take_hits(self, port: int) -> str:
        """The app's records for the connection from ``port``, removed so the port can be reused."""
        path = self.hits / str(port)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return ""
        os.unlink(path)
        return text
