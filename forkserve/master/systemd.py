"""systemd integration without a dependency: socket activation and ``sd_notify``.

Socket activation: systemd binds the sockets and starts us with them as fds 3.. and
``LISTEN_FDS``/``LISTEN_PID`` in the environment. The variables are removed once read, so the
app, its subprocesses and a re-exec'd master cannot mistake them for their own.

Notification: with ``Type=notify`` systemd sets ``NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace) and waits for ``READY=1``. The protocol is newline-separated ``KEY=VALUE``
lines in one datagram — a few lines of code, not a library. ``NOTIFY_SOCKET`` stays in the
master's environment on purpose: a USR2-upgraded master must be able to report its new MAINPID.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import MutableMapping

from forkserve.process.logs import error_log
from forkserve.process.sockets import systemd_fds

LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def take_listen_fds(environ: MutableMapping[str, str]) -> list[int]:
    """The fds systemd passed to this process (none when LISTEN_PID is not us); clears the variables."""
    fds = systemd_fds(environ)
    for name in LISTEN_VARIABLES:
        environ.pop(name, None)
    return fds


def notify_address(value: str) -> str | bytes | None:
    """The socket address for a ``NOTIFY_SOCKET`` value: a path, or ``@name`` → abstract name."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # e.g. vsock:, which systemd may use for VMs; not for us


class Notifier:
    """Sends ``sd_notify`` messages when ``NOTIFY_SOCKET`` is set; does nothing otherwise."""

    def __init__(self, environ: MutableMapping[str, str]) -> None:
        self.address = notify_address(environ.get("NOTIFY_SOCKET", ""))
        self.sock: socket.socket | None = None
        self.failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> None:
        """Send one message made of ``KEY=VALUE`` lines; a failure is logged once, never raised."""
        if self.address is None or self.failed:
            return
        try:
            if self.sock is None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as error:
            self.failed = True
            error_log.warning("cannot notify systemd at NOTIFY_SOCKET: %s", error.strerror or error)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets Type=notify-reload (systemd 253+) match this to the reload it asked for.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
