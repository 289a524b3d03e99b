"""Fixtures that run real forkserve processes on real sockets, and always clean them up.

Every server is started in its own session (process group), so teardown can stop the master and
any worker it left behind with one ``killpg``. Waits poll with deadlines; nothing sleeps blindly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # (tests/fleet.py also runs as a script, and imports this module)
    sys.path.insert(0, str(ROOT))

from benchmarks.ports import RANGE_ENV, free_port

APPS = Path(__file__).resolve().parent / "apps"


def _own_port_range() -> None:
    """Under pytest-xdist, give this test process its own slice of ports 10000-32767 (below the
    kernel's ephemeral range), so parallel processes never pick the same port for their servers
    (benchmarks/ports.py says why that matters)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    index, count = int(worker[2:]), max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    size = (PORTS_HIGH - PORTS_LOW + 1) // count
    low = PORTS_LOW + index * size
    os.environ[RANGE_ENV] = f"{low}-{low + size - 1}"


PORTS_LOW, PORTS_HIGH = 10000, 32767
_own_port_range()


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def children_of(pid: int) -> list[int]:
    """Direct child pids of a process, from /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(item) for item in text.split()]


def process_title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Server:
    """A forkserve master started as a subprocess, with its log captured to a file."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | str | None = None,
                 address: tuple[str, int] | str | None = None) -> None:
        self.args = args
        self.address = address
        # Both outlive this method on purpose; stop() closes and removes them.
        self.log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="forkserve-log-", suffix=".txt", delete=False
        )
        self.out_file = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="forkserve-out-", suffix=".txt", delete=False
        )
        full_env = dict(os.environ)
        full_env.pop("FORKSERVE_CMD_ARGS", None)
        full_env.pop("WEB_CONCURRENCY", None)
        full_env.pop("PORT", None)
        full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(APPS), full_env.get("PYTHONPATH", "")])
        full_env.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "forkserve", *args],
            cwd=str(cwd or ROOT),
            env=full_env,
            stdout=self.out_file,
            stderr=self.log_file,
            start_new_session=True,
        )
        self.pid = self.process.pid

    @property
    def url(self) -> str:
        assert isinstance(self.address, tuple)
        return f"http://{self.address[0]}:{self.address[1]}"

    def log(self) -> str:
        return Path(self.log_file.name).read_text(errors="replace")

    def stdout(self) -> str:
        return Path(self.out_file.name).read_text(errors="replace")

    def connect(self, timeout: float = 5.0) -> socket.socket:
        if isinstance(self.address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(self.address)
            return sock
        assert self.address is not None
        return socket.create_connection(self.address, timeout=timeout)

    def answers(self) -> bool:
        """True when a worker answers an HTTP request."""
        try:
            with self.connect(timeout=1.0) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                return sock.recv(16).startswith(b"HTTP/1.")
        except OSError:
            return False

    def wait_ready(self, timeout: float = 15.0) -> Server:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"forkserve exited with {self.process.returncode}:\n{self.log()}")
            return self.answers()

        wait_for(ready, timeout, message=f"forkserve {self.args} to answer")
        return self

    def workers(self) -> list[int]:
        return [pid for pid in children_of(self.pid) if pid_alive(pid)]

    def wait_workers(self, count: int, timeout: float = 10.0) -> list[int]:
        return wait_for(lambda: (w := self.workers()) and len(w) == count and w, timeout,
                        message=f"{count} workers")  # type: ignore[return-value]

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float = 15.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"forkserve did not exit within {timeout}s:\n{self.log()}") from None

    def stop(self) -> None:
        """TERM the master, wait; then kill the whole process group whatever is left."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        for handle in (self.log_file, self.out_file):
            handle.close()
            with contextlib.suppress(OSError):
                os.unlink(handle.name)


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """Start forkserve processes; each is stopped (and its group killed) at teardown.

    ``start_server("app:module", "-w", "2")`` binds a free 127.0.0.1 port unless the arguments
    contain ``-b``; pass ``ready=False`` to skip waiting for it to answer.
    """
    started: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None, cwd: Path | str | None = None,
              ready: bool = True, address: tuple[str, int] | str | None = None) -> Server:
        arguments = list(args)
        if address is None and "-b" not in arguments and "--bind" not in arguments:
            address = ("127.0.0.1", free_port())
            arguments = ["-b", f"{address[0]}:{address[1]}", *arguments]
        server = Server(arguments, env=env, cwd=cwd, address=address)
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


def run_forkserve(*args: str, env: dict[str, str] | None = None, cwd: Path | str | None = None,
                  timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run forkserve to completion (for commands that exit: --check-config, errors, ...)."""
    full_env = dict(os.environ)
    for name in ("FORKSERVE_CMD_ARGS", "WEB_CONCURRENCY", "PORT"):
        full_env.pop(name, None)
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(APPS), full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    return subprocess.run(  # the callers assert on the exit code themselves
        [sys.executable, "-m", "forkserve", *args],
        check=False,
        cwd=str(cwd or ROOT), env=full_env, capture_output=True, text=True, timeout=timeout,
        start_new_session=True,
    )


def raw_exchange(server: Server, data: bytes | list[bytes], timeout: float = 5.0,
                 pause: float = 0.0, half_close: bool = False) -> bytes:
    """Send raw bytes (a list is sent piece by piece, ``pause`` seconds apart) and read until the
    server closes or goes quiet for ``timeout`` seconds."""
    pieces = data if isinstance(data, list) else [data]
    with server.connect(timeout) as sock:
        for piece in pieces:
            sock.sendall(piece)
            if pause:
                time.sleep(pause)
        if half_close:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        chunks = []
        sock.settimeout(timeout)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def status_of(reply: bytes) -> int:
    """The status code of the first response in ``reply`` (0 when there is none)."""
    if not reply.startswith(b"HTTP/1."):
        return 0
    return int(reply.split(b" ", 2)[1])


# ---- Deployment fixtures (issue 5): a real nginx in front of forkserve -------------------------
# tls_files, start_nginx, behind_nginx. The helpers (Nginx, RequestLoop, client_session) live in
# tests/nginx.py; the nginx configuration is conf/nginx.conf itself.


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory):  # -> nginx.TlsFiles
    """A self-signed certificate for 127.0.0.1, shared by every nginx of the session."""
    from nginx import make_tls_files

    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def start_nginx(tmp_path_factory: pytest.TempPathFactory, tls_files):  # -> Iterator[Callable[..., Nginx]]
    """Start nginx from conf/nginx.conf in front of forkserve; each is stopped at teardown.

    ``start_nginx(("127.0.0.1", port))`` uses the TCP upstream, ``start_nginx("/path.sock")`` the
    unix-socket one. Returns a started ``nginx.Nginx`` (``.url``, ``.tls_url``, ``.error_log()``).
    """
    from nginx import Nginx

    started: list[Nginx] = []

    def start(upstream: tuple[str, int] | str) -> Nginx:
        proxy = Nginx(tmp_path_factory.mktemp("nginx"), upstream, tls_files)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def behind_nginx(start_server, start_nginx, tmp_path_factory: pytest.TempPathFactory):
    """Start forkserve and an nginx in front of it: ``behind_nginx("tcp" | "unix", *args, env=)``.

    ``args`` are forkserve's (app spec and options, no -b). Returns ``(server, proxy)``. Teardown
    stops nginx first, then forkserve.
    """

    def start(transport: str, *args: str, **kwargs: object) -> tuple[Server, object]:
        if transport == "unix":
            path = str(tmp_path_factory.mktemp("forkserve") / "forkserve.sock")
            server = start_server("-b", f"unix:{path}", *args, address=path, **kwargs)
            return server, start_nginx(path)
        assert transport == "tcp", transport
        server = start_server(*args, **kwargs)
        return server, start_nginx(server.address)

    return start
