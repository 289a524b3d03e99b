"""Listening sockets: parsing bind specs, binding them once in the master, inheriting them.

Workers inherit the master's listening sockets across fork. Options that accepted connections
inherit on Linux (TCP_NODELAY, SO_RCVTIMEO, SO_SNDTIMEO) are set once here on the listener, so the
per-connection hot path makes no setsockopt calls at all.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from forkserve.http.sockopts import timeval

SYSTEMD_FIRST_FD = 3


class BindError(Exception):
    """A socket could not be bound; the message is one line for the user."""


@dataclass
class Listener:
    """A bound, listening socket and what the HTTP layer needs to know about it."""

    sock: socket.socket
    spec: str
    server_name: str
    server_port: str
    unix_path: str | None = None
    owns_path: bool = False

    @property
    def is_unix(self) -> bool:
        return self.sock.family == socket.AF_UNIX

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self, remove_path: bool = True) -> None:
        """Close the socket; remove a unix socket file we created (unless handing it on)."""
        try:
            self.sock.close()
        finally:
            if remove_path and self.owns_path and self.unix_path:
                try:
                    os.unlink(self.unix_path)
                except FileNotFoundError:
                    pass


def parse_bind(spec: str) -> tuple[str, str | int, int]:
    """Classify a bind spec: ('unix', path, 0), ('fd', fd, 0) or ('tcp', host, port)."""
    text = spec.strip()
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        path = path.removeprefix("//")
        if not path:
            raise BindError(f"bind '{spec}': unix socket path is empty")
        return "unix", path, 0
    if text.startswith("fd://"):
        number = text[len("fd://"):]
        if not number.isdigit():
            raise BindError(f"bind '{spec}': expected fd://N with a file descriptor number")
        return "fd", int(number), 0
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BindError(f"bind '{spec}': expected [IPv6]:PORT")
        port_text = rest[1:] or "8000"
    elif text.count(":") > 1:
        raise BindError(f"bind '{spec}': put IPv6 addresses in brackets, e.g. [::1]:8000")
    else:
        host, _, port_text = text.partition(":")
        port_text = port_text or "8000"
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise BindError(f"bind '{spec}': '{port_text}' is not a port number")
    return "tcp", host or "0.0.0.0", int(port_text)


SO_TIMESTAMPNS = 35  # Linux; not in Python's socket module


def _tune_listener(sock: socket.socket, header_timeout: float, io_timeout: float) -> None:
    """Options every accepted connection inherits, set once here instead of per connection."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        # The kernel stamps each segment's arrival: a request's queue time counts from when
        # its bytes came in, even when the worker was in the app then.
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(header_timeout))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval(io_timeout))
    sock.setblocking(False)


def resolve(host: str | None, port: int) -> list[tuple[Any, ...]]:
    """``getaddrinfo`` for a passive TCP address.

    An ASCII host is passed as bytes: given a str, CPython encodes it with the "idna" codec,
    and importing that codec (with ``stringprep`` and ``unicodedata``) in the master adds some
    300 KB to every forked worker's memory. Only a non-ASCII host name needs the codec.
    """
    name = host.encode("ascii") if host and host.isascii() else host
    return socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)


def _bind_tcp(spec: str, host: str, port: int, backlog: int, reuse_port: bool) -> Listener:
    try:
        infos = resolve(host, port)
    except socket.gaierror as error:
        raise BindError(f"cannot bind {spec}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        raise BindError(f"cannot bind {spec}: {error.strerror or error}") from None
    bound_host, bound_port = sock.getsockname()[:2]
    return Listener(sock, spec, str(bound_host), str(bound_port))


def _remove_stale_unix_socket(spec: str, path: str) -> None:
    """Remove a socket file left by a dead server; refuse if a live one answers or it is no socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise BindError(f"cannot bind {spec}: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as error:
        if error.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise BindError(f"cannot bind {spec}: {error.strerror}") from None
        os.unlink(path)
        return
    finally:
        probe.close()
    raise BindError(f"cannot bind {spec}: address already in use (a server answers on {path})")


def _bind_unix(spec: str, path: str, backlog: int, umask: int) -> Listener:
    _remove_stale_unix_socket(spec, path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(umask)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        raise BindError(f"cannot bind {spec}: {error.strerror or error}") from None
    finally:
        os.umask(old_umask)
    return Listener(sock, spec, path, "", unix_path=path, owns_path=True)


def adopt_fd(fd: int, spec: str, backlog: int | None = None) -> Listener:
    """Wrap an inherited listening socket (fd://N, systemd, or a re-exec'd master's)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as error:
        raise BindError(f"cannot use {spec}: {error.strerror or error}") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise BindError(f"cannot use {spec}: fd {fd} is not a listening stream socket")
    if backlog is not None:
        sock.listen(backlog)
    sock.set_inheritable(False)
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        path = name if isinstance(name, str) else name.decode(errors="replace")
        return Listener(sock, spec, path, "", unix_path=path, owns_path=False)
    host, port = sock.getsockname()[:2]
    return Listener(sock, spec, str(host), str(port))


def systemd_fds(environ: Mapping[str, str]) -> list[int]:
    """File descriptors passed by systemd socket activation to this very process, if any."""
    try:
        if int(environ.get("LISTEN_PID", "0")) != os.getpid():
            return []
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    return list(range(SYSTEMD_FIRST_FD, SYSTEMD_FIRST_FD + count))


def create_listeners(
    binds: list[str],
    backlog: int,
    umask: int = 0,
    reuse_port: bool = False,
    header_timeout: float = 10.0,
    io_timeout: float = 30.0,
    inherited: list[int] | None = None,
    handed_over: list[int] | None = None,
) -> list[Listener]:
    """Bind every spec; close what was bound if one fails.

    ``inherited`` (systemd) fds replace the bind list. ``handed_over`` fds come from the master
    this one replaces (USR2): a spec whose address one of them already listens on adopts it
    instead of binding, new specs are bound, and handed-over sockets no spec names are kept too
    (they may be systemd's). Adopted unix sockets start with ``owns_path=False``: the old master
    still uses the file; the new master takes ownership once the old master is gone.
    """
    listeners: list[Listener] = []
    handed: list[Listener] = []
    try:
        if inherited:
            listeners = [adopt_fd(fd, f"fd://{fd}") for fd in inherited]
        else:
            handed = [adopt_fd(fd, f"fd://{fd}") for fd in handed_over or ()]
            for spec in binds:
                kind, target, port = parse_bind(spec)
                match = _handed_over_match(handed, kind, target, port)
                if match is not None:
                    handed.remove(match)
                    match.spec = spec
                    listeners.append(match)
                elif kind == "unix":
                    listeners.append(_bind_unix(spec, str(target), backlog, umask))
                elif kind == "fd":
                    listeners.append(adopt_fd(int(target), spec, backlog))
                else:
                    listeners.append(_bind_tcp(spec, str(target), port, backlog, reuse_port))
            listeners.extend(handed)
            handed = []
        for listener in listeners:
            _tune_listener(listener.sock, header_timeout, io_timeout)
    except BaseException:
        for listener in listeners + handed:
            listener.close()
        raise
    return listeners


def _handed_over_match(handed: list[Listener], kind: str, target: str | int, port: int) -> Listener | None:
    """The handed-over socket already listening where a bind spec asks, if any."""
    for listener in handed:
        if kind == "fd" and listener.fileno() == target:
            return listener
        if (kind == "unix" and listener.is_unix and listener.unix_path is not None
                and os.path.abspath(listener.unix_path) == os.path.abspath(str(target))):
            return listener
        if kind == "tcp" and port and not listener.is_unix:
            try:
                infos = resolve(str(target), port)
            except socket.gaierror:
                return None
            wanted = infos[0][4][:2]
            if tuple(listener.sock.getsockname()[:2]) == tuple(wanted):
                return listener
    return None


def describe(listener: Listener) -> str:
    """How a listener is named in logs: http://host:port or unix:path."""
    if listener.is_unix:
        return f"unix:{listener.unix_path}"
    host = listener.server_name
    return f"http://[{host}]:{listener.server_port}" if ":" in host else f"http://{host}:{listener.server_port}"


# A classic BPF socket filter for TCP listeners: drop a segment with SYN set and ACK clear (a new
# connection's first packet), keep everything else. Socket filters on TCP see the TCP header at
# offset 0; byte 13 holds the flags.
_DROP_NEW_CONNECTIONS = (
    (0x30, 0, 0, 13),  # ldb [13]             A = TCP flags
    (0x54, 0, 0, 0x12),  # and #0x12          A &= SYN | ACK
    (0x15, 0, 1, 0x02),  # jeq #0x02, 0, 1    SYN alone?
    (0x06, 0, 0, 0),  # ret #0                drop it
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1      keep anything else
)
SO_ATTACH_FILTER = 26


def stop_new_connections(listener: Listener) -> None:
    """Let no new connection into the listen queue, keeping those already there.

    For the shutdown drain: the workers serve exactly what the kernel accepted before TERM. On a
    TCP socket a filter drops new SYNs (the client retries, and is refused once the socket
    closes, or goes elsewhere); handshakes already under way complete, as their ACKs pass. A unix
    socket's queue is shrunk to its minimum instead, so at most one more connection can enter it.
    """
    import ctypes

    sock = listener.sock
    if listener.is_unix:
        sock.listen(0)
        return

    class Instruction(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                    ("k", ctypes.c_uint32)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Instruction))]

    instructions = (Instruction * len(_DROP_NEW_CONNECTIONS))(*_DROP_NEW_CONNECTIONS)
    program = Program(len(_DROP_NEW_CONNECTIONS), instructions)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(program))  # type: ignore[call-overload]
