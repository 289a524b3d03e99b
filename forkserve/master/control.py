"""The master's control socket: ``forkserve ctl`` talks to a running server through it.

A unix stream socket owned by the master (``control_socket``; by default ``forkserve.ctl``
beside the pidfile, else in ``$XDG_RUNTIME_DIR``, else in the directory forkserve was started
in), mode ``control_socket_mode`` (0600), off with ``control_socket_disable``. Whatever the file
mode allows, a peer is served only when its credentials (``SO_PEERCRED``) name the master's own
user or root; anyone else gets one refusal line and is logged.

One request per connection: a JSON line ``{"command": ..., "args": [...]}``; one JSON reply
``{"ok": true, "text": ..., "data": ...}`` or ``{"ok": false, "error": ...}``, then close.
Commands: ``status`` (the /stats document), ``workers N``, ``reload`` (HUP), ``reopen-logs``
(USR1), ``stop`` (QUIT: fast) or ``stop --graceful`` (TERM), and ``stacks`` (every worker's every
thread's stack, see :mod:`forkserve.master.stacks`). Signals asked for here go through the
master's own signal queue, so they behave exactly as if sent with ``kill``. Like the stats
endpoint it runs in the master's loop and never blocks it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import time
from typing import Any

from forkserve.master import stacks
from forkserve.process.logs import error_log
from forkserve.stats.metrics import snapshot, stats_json

DEFAULT_NAME = "forkserve.ctl"
MAX_REQUEST = 4096
CLIENT_DEADLINE = 5.0
_UCRED = struct.Struct("3i")  # pid, uid, gid
COMMANDS = ("status", "workers", "reload", "reopen-logs", "stop", "stacks")


def default_path(config: Any, launch_cwd: str) -> str:
    """Where the control socket goes when ``control_socket`` is not set."""
    if config.pidfile:
        return os.path.join(os.path.dirname(os.path.abspath(config.pidfile)), DEFAULT_NAME)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, DEFAULT_NAME)
    return os.path.join(launch_cwd, DEFAULT_NAME)


def peer_uid(sock: socket.socket) -> int:
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))[1]


def _in_use(path: str) -> bool:
    """Does a live process answer on the socket file at ``path``?"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


class _Client:
    __slots__ = ("buffer", "opened", "out", "sock")  # (every client is checked: see ControlServer._read)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.out = b""
        self.opened = time.monotonic()


class ControlServer:
    """Accepts ctl connections and answers them from the master's loop."""

    def __init__(self, sock: socket.socket, path: str, arbiter: Any) -> None:
        self.sock = sock
        self.path = path
        self.inode = os.stat(path).st_ino
        self.arbiter = arbiter
        self.readers = arbiter.events.readers
        self.writers = arbiter.events.writers
        self.clients: dict[int, _Client] = {}
        self.collection: stacks.StackCollection | None = None
        self.readers[sock.fileno()] = self._accept

    # -- connections ----------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                error_log.warning("control socket: accept failed: %s", error)
                return
            sock.setblocking(False)
            client = _Client(sock)
            self.clients[sock.fileno()] = client
            self.readers[sock.fileno()] = lambda client=client: self._read(client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.buffer += data
        if b"\n" not in client.buffer:
            if len(client.buffer) > MAX_REQUEST:
                self._reply(client, {"ok": False, "error": "request too long"})
            return
        self.readers.pop(client.sock.fileno(), None)
        uid = peer_uid(client.sock)  # (answered once the request is in: the client is then reading)
        if uid not in (0, os.geteuid()):
            error_log.warning("control socket: refused a client running as uid %d (only uid %d and root "
                              "may use it)", uid, os.geteuid())
            self._reply(client, {"ok": False, "error": f"permission denied: uid {uid} is neither the "
                                 f"server's user (uid {os.geteuid()}) nor root"})
            return
        try:
            request = json.loads(client.buffer.split(b"\n", 1)[0])
            command, args = str(request["command"]), [str(item) for item in request.get("args", [])]
        except (ValueError, KeyError, TypeError):
            self._reply(client, {"ok": False, "error": "not a control request"})
            return
        try:
            reply = self._run(client, command, args)
        except Exception as error:  # noqa: BLE001 -- a bug in a command must cost one reply, never the master
            error_log.exception("control socket: %s failed", command)
            reply = {"ok": False, "error": f"{command} failed in the master: {error}"}
        if reply is not None:
            self._reply(client, reply)

    def _reply(self, client: _Client, reply: dict[str, Any]) -> None:
        client.out = (json.dumps(reply) + "\n").encode()
        self.readers.pop(client.sock.fileno(), None)
        self._write(client)

    def _write(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(client)
            return
        client.out = client.out[sent:]
        if client.out:
            self.writers[client.sock.fileno()] = lambda: self._write(client)
        else:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        fd = client.sock.fileno()
        self.readers.pop(fd, None)
        self.writers.pop(fd, None)
        self.clients.pop(fd, None)
        client.sock.close()

    # -- commands -------------------------------------------------------------------------------

    def _run(self, client: _Client, command: str, args: list[str]) -> dict[str, Any] | None:
        arbiter = self.arbiter
        if command == "status":
            return {"ok": True, "data": stats_json(snapshot(arbiter))}
        if command == "workers":
            return self._workers(args)
        if command == "reload":
            return self._signal(signal.SIGHUP, "reload asked (as HUP): new workers start, the old ones stop "
                                "once they are up; see the error log")
        if command == "reopen-logs":
            return self._signal(signal.SIGUSR1, "the master and every worker reopen their log files (as USR1)")
        if command == "stop":
            graceful = "--graceful" in args
            return self._signal(signal.SIGTERM if graceful else signal.SIGQUIT,
                                "graceful stop asked (as TERM)" if graceful else "fast stop asked (as QUIT)")
        if command == "stacks":
            return self._stacks(client)
        return {"ok": False, "error": f"unknown command {command!r}; commands: {', '.join(COMMANDS)}"}

    def _signal(self, signum: int, text: str) -> dict[str, Any]:
        self.arbiter.events.signals.append(signum)  # acted on by the loop, as if sent with kill
        return {"ok": True, "text": text}

    def _workers(self, args: list[str]) -> dict[str, Any]:
        if len(args) != 1 or not args[0].isdigit() or int(args[0]) < 1:
            return {"ok": False, "error": "workers needs one count of at least 1, e.g. 'workers 4'"}
        arbiter, count = self.arbiter, int(args[0])
        old = arbiter.target_workers
        if count != old:
            arbiter.set_target(count)
            if count < old:
                arbiter.fleet.retire_extra(count)
        return {"ok": True, "text": f"worker count {old} -> {count}"}

    def _stacks(self, client: _Client) -> None:
        arbiter = self.arbiter
        if self.collection is None:
            records = list(arbiter.fleet.workers.values())
            self.collection = stacks.StackCollection.start(records, arbiter.scoreboard)
        self.collection.replies.append(client)

    # -- the loop's side --------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Finish a stacks collection once complete or overdue; drop stalled clients."""
        collection = self.collection
        if collection is not None and collection.poll(time.monotonic()):
            self.collection = None
            report = collection.report()
            for client in collection.replies:
                if client.sock.fileno() in self.clients:
                    self._reply(client, {"ok": True, "text": report})
        expired = time.monotonic() - CLIENT_DEADLINE
        waiting = set(self.collection.replies) if self.collection is not None else set()
        for client in [item for item in self.clients.values() if item.opened < expired and item not in waiting]:
            self._drop(client)

    def next_wakeup(self, now: float) -> float | None:
        return stacks.POLL if self.collection is not None else None

    def worker_exited(self, record: Any) -> None:
        if self.collection is not None:
            self.collection.worker_exited(record)

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        self.readers.pop(self.sock.fileno(), None)
        self.sock.close()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:  # not a USR2 successor's socket
                os.unlink(self.path)


def open_control_server(arbiter: Any) -> ControlServer | None:
    """Bind the control socket (None, with a log line, when it cannot be had)."""
    config = arbiter.config
    path = os.path.abspath(os.path.join(arbiter.launch_cwd, config.control_socket)) if config.control_socket \
        else default_path(config, arbiter.launch_cwd)
    explicit = bool(config.control_socket)
    complain = error_log.warning if explicit else error_log.info
    takeover = arbiter.upgrade.old_master_pid is not None  # USR2: the old master's socket becomes ours
    if os.path.exists(path) and _in_use(path) and not takeover:
        complain("control socket: %s is in use by another running server; this one has none "
                 "(set control_socket to a path of its own)", path)
        return None
    temporary = f"{path}.{os.getpid()}.tmp"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        sock.bind(temporary)
        os.chmod(temporary, config.control_socket_mode)
        sock.listen(16)
        os.rename(temporary, path)  # atomically: a stale file (or an old master's) is replaced
    except OSError as error:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        complain("control socket: cannot listen at %s: %s; 'forkserve ctl' cannot reach this server",
                 path, error.strerror or error)
        return None
    sock.setblocking(False)
    error_log.info("control socket at %s ('forkserve ctl --socket %s status')", path, path)
    return ControlServer(sock, path, arbiter)
