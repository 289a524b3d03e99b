"""A real nginx in front of forkserve, run from the shipped conf/nginx.conf.

``Nginx`` renders the template with ports and paths under a temporary prefix, starts
``nginx -g 'daemon off;'`` as the test's own process (its own session, so teardown can stop the
master and its workers by process group), waits until it serves a static file, and stops it by
pid. Every upstream variant of the template is reachable: pass forkserve's address as a
``(host, port)`` tuple for the TCP upstream, as a path for the unix-socket one, or a list of
``(host, port)`` for the several-hosts one (forkserve_hosts, three servers).

nginx and openssl are system programs: a machine without them skips these tests with the command
that installs them, and CI (``CI=true``) fails them instead (tests/system_programs.py).
"""

from __future__ import annotations

import collections
import contextlib
import grp
import os
import pwd
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import requests
from conf_template import render
from requests.adapters import HTTPAdapter
from system_programs import require_program

from benchmarks.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "conf" / "nginx.conf"
NGINX_UWSGI_CONF = ROOT / "conf" / "nginx-uwsgi.conf"
STATIC_PROBE = "ready.txt"
STATIC_PROBE_TEXT = "served by nginx\n"
HOSTS_IN_TEMPLATE = 3  # the forkserve_hosts upstream's server lines (@HOST_1@ .. @HOST_3@)


def nginx_binary() -> str:
    """Path of the nginx binary; skips the test (fails it under CI) when nginx is not installed."""
    return require_program("nginx", "the front end of the deployment tests")


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for 127.0.0.1 and its key (requests verifies against it)."""

    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Create a throwaway EC certificate valid for IP 127.0.0.1 with the openssl command."""
    openssl = require_program("openssl", "to make nginx's test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return TlsFiles(cert, key)


class Nginx:
    """One nginx master (plus workers) serving conf/nginx.conf from a private prefix."""

    def __init__(self, prefix: Path, upstream: tuple[str, int] | str | list[tuple[str, int]],
                 tls: TlsFiles, conf: Path = NGINX_CONF) -> None:
        self.prefix = prefix
        self.upstream = upstream
        self.port = free_port()
        self.tls_port = free_port()
        self.static_root = prefix / "static"
        for directory in ("logs", "tmp", "static"):
            (prefix / directory).mkdir(parents=True, exist_ok=True)
        (self.static_root / STATIC_PROBE).write_text(STATIC_PROBE_TEXT)
        unused_tcp, unused_unix = "127.0.0.1:9", str(prefix / "unused.sock")
        hosts = [unused_tcp] * HOSTS_IN_TEMPLATE
        if isinstance(upstream, list):
            assert len(upstream) == HOSTS_IN_TEMPLATE, upstream
            hosts = [f"{host}:{port}" for host, port in upstream]
            chosen, tcp, unix = "forkserve_hosts", unused_tcp, unused_unix
        elif isinstance(upstream, tuple):
            chosen, tcp, unix = "forkserve_tcp", f"{upstream[0]}:{upstream[1]}", unused_unix
        else:
            chosen, tcp, unix = "forkserve_unix", unused_tcp, upstream
        self.conf_path = prefix / "nginx.conf"
        self.conf_path.write_text(render(conf, {
            "USER": f"{pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name}",
            "PREFIX": str(prefix),
            "LISTEN": f"127.0.0.1:{self.port}",
            "TLS_LISTEN": f"127.0.0.1:{self.tls_port}",
            "TLS_CERT": str(tls.cert),
            "TLS_KEY": str(tls.key),
            "STATIC_ROOT": f"{self.static_root}/",
            "UPSTREAM_TCP": tcp,
            "UPSTREAM_UNIX": unix,
            # (only the main template has the several-hosts upstream)
            **({f"HOST_{index}": host for index, host in enumerate(hosts, 1)} if conf == NGINX_CONF else {}),
            "UPSTREAM": chosen,
        }))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 15.0) -> Nginx:
        binary = nginx_binary()
        with open(self.prefix / "logs" / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(
                [binary, "-p", f"{self.prefix}/", "-c", str(self.conf_path),
                 "-e", str(self.prefix / "logs" / "error.log"), "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._serves_static():
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited with {self.process.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nginx did not answer within {timeout}s:\n{self.logs()}")
            time.sleep(0.02)
        return self

    def _serves_static(self) -> bool:
        try:
            reply = requests.get(f"{self.url}/static/{STATIC_PROBE}", timeout=1)
        except requests.RequestException:
            return False
        return reply.status_code == 200 and reply.text == STATIC_PROBE_TEXT

    def error_log(self) -> str:
        return _read(self.prefix / "logs" / "error.log")

    def access_log(self) -> str:
        return _read(self.prefix / "logs" / "access.log")

    def access_statuses(self) -> collections.Counter[int]:
        """Status codes nginx logged, counted (a 502 shows up here whatever client got it)."""
        return collections.Counter(
            int(status) for status in re.findall(r'^.*?"[^"]*" (\d{3}) ', self.access_log(), re.MULTILINE)
        )

    def logs(self) -> str:
        return (f"--- nginx stderr\n{_read(self.prefix / 'logs' / 'stderr.log')}"
                f"--- nginx error.log\n{self.error_log()}")

    def stop(self) -> None:
        """QUIT (graceful) the master, wait; then kill its process group, whatever is left."""
        stop_process_group(self.process, signal.SIGQUIT)


def stop_process_group(process: subprocess.Popen[bytes] | None, graceful: int) -> None:
    """Send ``graceful`` to a process started in its own session and wait a little; then
    SIGKILL its whole process group, whatever is left. Safe on a process already gone."""
    if process is None:
        return
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(graceful)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class _SourceAddressAdapter(HTTPAdapter):
    """Connect from a chosen local address, so the client is told apart from nginx (127.0.0.1)."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]


def client_session(source: str = "127.0.0.2", tls: TlsFiles | None = None) -> requests.Session:
    """A requests session connecting from ``source`` and trusting the test certificate."""
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides verify
    adapter = _SourceAddressAdapter(source)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if tls is not None:
        session.verify = str(tls.cert)
    return session


@dataclass
class LoadResult:
    """Every outcome of a RequestLoop: status codes and exception names, counted, and each one
    with the monotonic time it completed (to split outcomes before and after a signal)."""

    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    events: list[tuple[float, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    def failures(self) -> dict[str, int]:
        """Everything that was not the expected 200."""
        return {outcome: count for outcome, count in self.outcomes.items() if outcome != "200"}


class RequestLoop:
    """Bounded client load: ``threads`` threads send requests back to back until stopped.

    Each thread keeps its own session (keep-alive to nginx). A thread stops by itself after
    ``max_seconds`` or ``max_requests``, so a test that forgets to stop it cannot hang. Use as a
    context manager; ``result`` is complete after the block.
    """

    def __init__(self, url: str, threads: int = 2, method: str = "GET", data: bytes | None = None,
                 max_seconds: float = 30.0, max_requests: int = 5000) -> None:
        self.url = url
        self.method = method
        self.data = data
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_requests(self, count: int, timeout: float = 15.0) -> None:
        """Block until at least ``count`` requests completed (any outcome)."""
        deadline = time.monotonic() + timeout
        while self.result.total < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.result.total} of {count} requests completed in {timeout}s")
            time.sleep(0.02)

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.max_seconds + 10)
        return self.result

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with requests.Session() as session:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    reply = session.request(self.method, self.url, data=self.data, timeout=10)
                    outcome = str(reply.status_code)
                except requests.RequestException as error:
                    outcome = type(error).__name__
                with self._lock:
                    self.result.outcomes[outcome] += 1
                    self.result.events.append((time.monotonic(), outcome))
                    if self.result.total >= self.max_requests:
                        self._stop.set()
