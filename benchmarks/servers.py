"""Starting and stopping the servers under comparison, configured alike.

Every server runs the same app on a free loopback port, with the access log off and the log
level at warning, from an empty working directory (so none picks up a config file lying around),
in a session of its own (so stopping one kills exactly its own process group). ``stop`` is safe
to call at any moment, twice, and after a crash.

A *kind* is a server program (forkserve, gunicorn, uWSGI, granian) and how to launch it; a
*spec* is a kind as one scenario runs it: its extra arguments (``--threads 8``, gunicorn's
worker class), its worker count relative to the runner's ``--workers``, and the label its rows
carry in the report. uWSGI and granian are optional comparators: used when installed, skipped
with a note otherwise (``comparators``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar

from benchmarks.ports import free_port
from benchmarks.procstat import children
from benchmarks.transports import (
    HTTP,
    PLAIN,
    TLS,
    Certificate,
    ClientTransport,
    ensure_certificate,
    resolve_args,
)

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
T = TypeVar("T")
_SCRUBBED_ENV = ("FORKSERVE_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "PORT")
# uWSGI reads every UWSGI_* variable as an option and granian every GRANIAN_* one.
_SCRUBBED_PREFIXES = ("UWSGI_", "GRANIAN_")


class ServerError(RuntimeError):
    """A server did not start or answer; the message carries the tail of its log."""


# (app, port, workers, extra arguments) -> argv
Launcher = Callable[[str, int, int, tuple[str, ...]], list[str]]


@dataclass(frozen=True)
class ServerKind:
    """One server program: its name, how to launch it, and whether it is installed.

    ``missing`` returns why the program cannot run here (None when it can); only optional kinds
    may be missing, forkserve and gunicorn are dependencies of the test extra.
    """

    name: str
    launcher: Launcher
    optional: bool = False
    missing: Callable[[], str | None] = lambda: None

    def command(self, app: str, port: int, workers: int, args: tuple[str, ...] = ()) -> list[str]:
        return self.launcher(app, port, workers, args)


def module_launcher(module: str, fixed: tuple[str, ...]) -> Launcher:
    """forkserve's and gunicorn's command line (they share gunicorn's option names), with
    ``fixed`` arguments before each spec's own."""

    def launch(app: str, port: int, workers: int, args: tuple[str, ...]) -> list[str]:
        return [
            sys.executable, "-m", module, "--workers", str(workers), "--bind", f"{HOST}:{port}",
            "--log-level", "warning", *fixed, *args, app,
        ]

    return launch


def uwsgi_executable() -> str | None:
    """The uwsgi program installed beside this interpreter (pip's, built for it), else on PATH."""
    beside = Path(sys.executable).parent / "uwsgi"
    if beside.exists():
        return str(beside)
    return shutil.which("uwsgi")


BIND = "{bind}"  # in a spec's arguments: the server's address (uWSGI's socket option takes it)
# uWSGI's two native HTTP sockets (no router in front). On uWSGI 2.0 a plain --http-socket
# closes the connection after every response without saying so (wrk, expecting keep-alive,
# counts a read error per request), whatever --http-keepalive (an option of the --http router)
# or an added "Connection: Keep-Alive" header say; --http11-socket keeps connections alive, and
# keeps them even when the client asked for "Connection: close". So keep-alive scenarios run
# --http11-socket, and Connection: close ones --http-socket with the "Connection: close" it
# means stated in every response (so wrk reconnects cleanly, as after gunicorn's sync worker).
UWSGI_KEEPALIVE = ("--http11-socket", BIND)
UWSGI_CLOSE = ("--http-socket", BIND, "--add-header", "Connection: close")


def _uwsgi(app: str, port: int, workers: int, args: tuple[str, ...]) -> list[str]:
    """uWSGI serving HTTP itself: on ``--http11-socket`` unless the spec's arguments name the
    socket (with ``BIND`` for the address). ``--die-on-term``: TERM stops uWSGI (by default it
    means "reload"), as for the other servers. ``--need-app``: exit rather than answer 500 when
    the app cannot be imported."""
    if BIND not in args:
        args = (*UWSGI_KEEPALIVE, *args)
    return [
        uwsgi_executable() or "uwsgi", *(f"{HOST}:{port}" if arg == BIND else arg for arg in args),
        "--module", app, "--processes", str(workers), "--master", "--die-on-term", "--need-app",
        "--disable-logging",
    ]


def _uwsgi_missing() -> str | None:
    return None if uwsgi_executable() else "uwsgi is not installed (pip install uwsgi)"


def _granian(app: str, port: int, workers: int, args: tuple[str, ...]) -> list[str]:
    """granian's WSGI interface, its defaults otherwise (its access log is off unless asked for)."""
    return [
        sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", str(workers),
        "--host", HOST, "--port", str(port), "--no-access-log", "--log-level", "warning", *args, app,
    ]


def _granian_missing() -> str | None:
    found = importlib.util.find_spec("granian") is not None
    return None if found else "granian is not installed (pip install granian)"


# forkserve's access log is off unless --access-logfile is given. Idle keep-alive connections are
# held for 75 s (nginx's keepalive_timeout), not the 2 s default, so that the idle-keepalive
# scenario's connections stay open for the whole run (gunicorn's sync worker closes every
# connection after its response whatever --keep-alive says, so both get the same flag).
FORKSERVE = ServerKind("forkserve", module_launcher("forkserve", ("--keep-alive", "75")))
# gunicorn's access log is off unless --access-logfile is given too. Its control socket (a
# thread in the master, at a fixed path under ~/.gunicorn) is turned off so concurrent
# benchmark runs cannot collide on it; it plays no part in serving requests. The worker class
# is the spec's (sync unless a scenario says otherwise).
GUNICORN = ServerKind("gunicorn", module_launcher("gunicorn", ("--no-control-socket", "--keep-alive", "75")))
UWSGI = ServerKind("uwsgi", _uwsgi, optional=True, missing=_uwsgi_missing)
GRANIAN = ServerKind("granian", _granian, optional=True, missing=_granian_missing)
COMPARATORS = (UWSGI, GRANIAN)


@dataclass(frozen=True)
class ServerSpec:
    """A server kind as one scenario runs it.

    ``worker_factor`` multiplies the runner's ``--workers`` (16 sync workers against 2 workers
    of 8 threads); ``label`` names the rows in the report and may use ``{workers}``.
    """

    kind: ServerKind
    args: tuple[str, ...] = ()
    worker_factor: int = 1
    label: str = ""
    transport: str = HTTP  # what its clients speak (TLS: its args carry CERTFILE and KEYFILE)

    def workers(self, base: int) -> int:
        return base * self.worker_factor

    def name(self, base_workers: int) -> str:
        """The label in the report, with the worker count filled in."""
        return (self.label or self.kind.name).format(workers=self.workers(base_workers))


@dataclass(frozen=True)
class Launch:
    """Exactly one server process tree to start: what the runner shares between scenarios."""

    kind: ServerKind
    app: str
    workers: int
    args: tuple[str, ...] = ()
    transport: str = HTTP

    @classmethod
    def of(cls, spec: ServerSpec, app: str, base_workers: int) -> Launch:
        return cls(spec.kind, app, spec.workers(base_workers), spec.args, spec.transport)


def comparators(wanted: Iterable[str] = (), unwanted: Iterable[str] = (),
                kinds: tuple[ServerKind, ...] = COMPARATORS) -> tuple[tuple[ServerKind, ...], list[str]]:
    """The optional comparators to run (of ``kinds``), and a note for each one left out.

    Each is used when installed, unless in ``unwanted``; one in ``wanted`` must be installed
    (ServerError saying how to install it otherwise). Unknown names are a ValueError.
    """
    known = {kind.name: kind for kind in kinds}
    wanted, unwanted = set(wanted), set(unwanted)
    unknown = sorted((wanted | unwanted) - known.keys())
    if unknown:
        raise ValueError(f"unknown comparator(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    chosen: list[ServerKind] = []
    notes: list[str] = []
    for kind in kinds:
        if kind.name in unwanted:
            notes.append(f"{kind.name}: left out (--without)")
            continue
        reason = kind.missing()
        if reason is None:
            chosen.append(kind)
        elif kind.name in wanted:
            raise ServerError(f"{kind.name} was asked for with --with, but {reason}")
        else:
            notes.append(f"{kind.name}: skipped, {reason}")
    return tuple(chosen), notes


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every server gets: this checkout first on the path, no settings leaking in."""
    env = {name: value for name, value in os.environ.items()
           if name not in _SCRUBBED_ENV and not name.startswith(_SCRUBBED_PREFIXES)}
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


def answers(port: int, timeout: float = 2.0, transport: ClientTransport = PLAIN) -> bool:
    """True when something on the port answers a request, sent over ``transport`` (a TLS
    handshake first, a PROXY header, a uwsgi packet), with an HTTP status line."""
    try:
        with transport.connect(port, timeout) as sock:
            sock.sendall(transport.request("GET", "/", close=True))
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

    def __init__(self, launch: Launch, workdir: Path, env: dict[str, str] | None = None,
                 certificate: Certificate | None = None) -> None:
        """Start the server. A TLS launch serves ``certificate``, by default the one made in
        ``workdir`` (shared by every server started there), and its clients verify against it."""
        self.launch = launch
        self.kind = launch.kind
        self.app = launch.app
        self.workers = launch.workers
        self.port = free_port()
        self.log_path = workdir / f"{self.kind.name}-{self.port}.log"
        if launch.transport == TLS:
            certificate = certificate or ensure_certificate(workdir)
        else:
            certificate = None
        self.client = ClientTransport(launch.transport, certificate.cert if certificate else None)
        self.command = self.kind.command(self.app, self.port, self.workers, resolve_args(launch.args, certificate))
        self._seen_workers: set[int] = set()
        self._terminated = False
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=workdir, env=server_env(env), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.pid = self.process.pid

    @property
    def url(self) -> str:
        return f"{self.client.scheme}://{HOST}:{self.port}"

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
            if len(self.worker_pids()) >= self.workers and answers(self.port, transport=self.client):
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self.kind.name} did not answer on {self.url} in time "
                    f"({' '.join(self.command)}):\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def terminate(self) -> None:
        """TERM the master (once), without waiting: ``stop`` then waits. Stopping several servers
        TERMs them all first, so their graceful shutdowns overlap."""
        self.worker_pids()
        if not self._terminated and self.process.poll() is None:
            self._terminated = True
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def stop(self) -> list[int]:
        """TERM the master and wait; then SIGKILL its process group and any worker still alive.

        Returns the pids that had to be killed after the graceful stop (normally none).
        """
        self.terminate()
        if self.process.poll() is None:
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


def start_together(launches: list[Launch], workdir: Path, env: dict[str, str] | None = None
                   ) -> list[RunningServer]:
    """Start every launch at once and wait until all answer (boot times overlap).

    On any failure, or Ctrl-C, every server already started is stopped before the error goes on.
    """
    started: list[RunningServer] = []
    try:
        for launch in launches:
            started.append(RunningServer(launch, workdir, env))
        deadline = time.monotonic() + READY_TIMEOUT
        for server in started:
            server.wait_ready(deadline)
    except BaseException:
        stop_all(started)
        raise
    return started


def stop_all(servers: Iterable[RunningServer]) -> None:
    """Stop every server (TERM to all, then wait for each), saying on stderr when one had to be
    killed."""
    servers = list(servers)
    for server in servers:
        server.terminate()
    for server in servers:
        forced = server.stop()
        if forced:
            print(f"warning: {server.kind.name} left pids {forced} after TERM; killed them",
                  file=sys.stderr)


class ServerSet:
    """Servers running the same app, started together; a context manager that always stops them."""

    def __init__(self, app: str, workers: int, workdir: Path, specs: Iterable[ServerSpec],
                 env: dict[str, str] | None = None) -> None:
        self.launches = [Launch.of(spec, app, workers) for spec in specs]
        self.workdir = workdir
        self.env = env
        self.servers: list[RunningServer] = []

    def __enter__(self) -> list[RunningServer]:
        self.servers = start_together(self.launches, self.workdir, self.env)
        return list(self.servers)

    def __exit__(self, *exc: object) -> None:
        stop_all(self.servers)


class ServerPool:
    """Servers keyed by what they run (kind, app, worker count, arguments), shared by every
    scenario that needs exactly that server.

    The runner asks for a scenario's servers (``acquire``: the missing ones are started
    together), and after each scenario lets go of those no later scenario needs (``keep_only``).
    A server is thus started once however many scenarios use it, and no more of them run at
    once than the scenarios at hand need. A context manager that always stops them all.
    """

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.env = env
        self.running: dict[Launch, RunningServer] = {}

    def acquire(self, launches: list[Launch]) -> tuple[list[RunningServer], list[RunningServer]]:
        """(the servers for ``launches``, in order; those of them started by this call)."""
        missing = list(dict.fromkeys(launch for launch in launches if launch not in self.running))
        started = start_together(missing, self.workdir, self.env)
        self.running.update(zip(missing, started, strict=True))
        return [self.running[launch] for launch in launches], started

    def keep_only(self, wanted: Iterable[Launch]) -> None:
        """Stop every server not in ``wanted``."""
        keep = set(wanted)
        gone = [launch for launch in self.running if launch not in keep]
        stop_all(self.running.pop(launch) for launch in gone)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.keep_only(())
