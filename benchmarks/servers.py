"""Starting and stopping the servers under comparison, configured alike.

Both run the same app with the same worker count on a free loopback port, with the access log
off and the log level at warning, from an empty working directory (so neither picks up a config
file lying around), in a session of their own (so stopping one kills exactly its own process
group). ``stop`` is safe to call at any moment, twice, and after a crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from benchmarks.procstat import children

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
T = TypeVar("T")
_SCRUBBED_ENV = ("FORKSERVE_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "PORT")


class ServerError(RuntimeError):
    """A server did not start or answer; the message carries the tail of its log."""


@dataclass(frozen=True)
class ServerKind:
    """How to launch one server program (name, then the argv for an app/port/worker count)."""

    name: str
    module: str
    extra: tuple[str, ...]

    def command(self, app: str, port: int, workers: int) -> list[str]:
        return [
            sys.executable, "-m", self.module, "--workers", str(workers), "--bind", f"{HOST}:{port}",
            "--log-level", "warning", *self.extra, app,
        ]


# forkserve's access log is off unless --access-logfile is given. Idle keep-alive connections are
# held for 75 s (nginx's keepalive_timeout), not the 2 s default, so that the idle-keepalive
# scenario's connections stay open for the whole run (gunicorn's sync worker closes every
# connection after its response whatever --keep-alive says, so both get the same flag).
FORKSERVE = ServerKind("forkserve", "forkserve", ("--keep-alive", "75"))
# gunicorn's access log is off unless --access-logfile is given too. Its control socket (a
# thread in the master, at a fixed path under ~/.gunicorn) is turned off so concurrent
# benchmark runs cannot collide on it; it plays no part in serving requests.
GUNICORN = ServerKind("gunicorn", "gunicorn", ("--worker-class", "sync", "--no-control-socket", "--keep-alive", "75"))
KINDS = (FORKSERVE, GUNICORN)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment both servers get: this checkout first on the path, no settings leaking in."""
    env = {name: value for name, value in os.environ.items() if name not in _SCRUBBED_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra or {})
    return env


def poll_until(condition: Callable[[], T], timeout: float, interval: float = 0.02) -> T | None:
    """``condition()``'s first truthy value, polled every ``interval`` s; None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def answers(port: int, timeout: float = 2.0) -> bool:
    """True when something on the port answers an HTTP request with an HTTP status line."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True for a live process (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class RunningServer:
    """One server process tree started by us; ``stop`` ends it and everything it forked."""

    def __init__(self, kind: ServerKind, app: str, workers: int, workdir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.app = app
        self.workers = workers
        self.port = free_port()
        self.log_path = workdir / f"{kind.name}-{self.port}.log"
        self.command = kind.command(app, self.port, workers)
        self._seen_workers: set[int] = set()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=workdir, env=server_env(env), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.pid = self.process.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def worker_pids(self) -> list[int]:
        """Live worker pids right now (and remember them, so ``stop`` can check each is gone)."""
        pids = [pid for pid in children(self.pid) if pid_alive(pid)]
        self._seen_workers.update(pids)
        return pids

    def describe(self) -> str:
        """The progress line saying what was started (tests read the pids from it)."""
        return (f"  {self.kind.name} on {self.url}: master pid {self.pid}, "
                f"worker pids {' '.join(map(str, self.worker_pids()))}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, deadline: float) -> None:
        """Until the master has all its workers and the port answers; ServerError past the deadline."""
        while True:
            if self.process.poll() is not None:
                raise ServerError(
                    f"{self.kind.name} exited with {self.process.returncode} while starting "
                    f"({' '.join(self.command)}):\n{self.log_tail()}"
                )
            if len(self.worker_pids()) >= self.workers and answers(self.port):
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self.kind.name} did not answer on {self.url} in time "
                    f"({' '.join(self.command)}):\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> list[int]:
        """TERM the master and wait; then SIGKILL its process group and any worker still alive.

        Returns the pids that had to be killed after the graceful stop (normally none).
        """
        self.worker_pids()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_TIMEOUT)
        forced = [pid for pid in [self.pid, *sorted(self._seen_workers)] if pid_alive(pid)]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for pid in forced:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        return forced


class ServerSet:
    """Every server kind running the same app; a context manager that always stops them all."""

    def __init__(self, app: str, workers: int, workdir: Path, kinds: tuple[ServerKind, ...] = KINDS,
                 env: dict[str, str] | None = None) -> None:
        self.app = app
        self.workers = workers
        self.workdir = workdir
        self.kinds = kinds
        self.env = env
        self.servers: list[RunningServer] = []

    def __enter__(self) -> list[RunningServer]:
        try:
            # Started together, waited for together: boot time overlaps.
            for kind in self.kinds:
                self.servers.append(RunningServer(kind, self.app, self.workers, self.workdir, self.env))
            deadline = time.monotonic() + READY_TIMEOUT
            for server in self.servers:
                server.wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        return list(self.servers)

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for server in self.servers:
            forced = server.stop()
            if forced:
                print(f"warning: {server.kind.name} left pids {forced} after TERM; killed them",
                      file=sys.stderr)
