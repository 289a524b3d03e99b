"""``daemon = True``: detach from the terminal, and let the launching command report how start went.

We detach *after* the sockets are bound (gunicorn detaches before): a port already in use, a
missing directory or a live pid file is then reported on the terminal with a non-zero exit
instead of only in a log file nobody is watching, and the sockets simply survive the forks.

The launching process does not return at once either: it waits (bounded) on a pipe until the
daemon says its workers are serving — or that it stopped, with its exit code — and exits with
that. This is the contract systemd's ``Type=forking`` expects: when the command returns, the
service is up and the pid file names the daemon.
"""

from __future__ import annotations

import os
import select
import sys
import time

from forkserve.process.exits import EXIT_FAILURE, EXIT_OK
from forkserve.settings.registry import Config

READY_WAIT = 60.0  # how long the launching command waits for the daemon to be serving


class Launcher:
    """The daemon's end of the pipe to the command that launched it. Each report is sent once."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    @property
    def waiting(self) -> bool:
        return self.fd is not None

    def ready(self) -> None:
        self._send(f"ready {os.getpid()}")

    def failed(self, code: int, message: str) -> None:
        self._send(f"fail {code} {message}")

    def _send(self, text: str) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, text.replace("\n", " ").encode() + b"\n")
        except OSError:
            pass  # the launching command is gone (killed); nothing to tell
        finally:
            os.close(self.fd)
            self.fd = None


def log_warnings(config: Config) -> list[str]:
    """What is lost when detaching: logs going to stdout/stderr end up in /dev/null."""
    lost = [f"{name} is '-'" for name in ("errorlog", "accesslog") if getattr(config, name) == "-"]
    if not lost:
        return []
    text = (
        f"daemon: {' and '.join(lost)}, which is /dev/null once detached, so those lines are lost; "
        "set --error-logfile / --access-logfile to files to keep them"
    )
    return [text]


def detach() -> Launcher:
    """Double fork into a new session with stdio on /dev/null; only the daemon returns.

    The calling process becomes the launching command: it waits for the daemon's report and
    exits with it (``os._exit``: the sockets and files now belong to the daemon).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    first = os.fork()
    if first > 0:
        os.close(write_fd)
        code = _wait_for_report(read_fd, first)
        os._exit(code)
    os.close(read_fd)
    os.setsid()  # no controlling terminal: a closed terminal sends us no HUP
    if os.fork() > 0:
        os._exit(0)  # the daemon is not a session leader, so it can never get a terminal back
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    return Launcher(write_fd)


def _wait_for_report(read_fd: int, middle_pid: int) -> int:
    """In the launching command: the exit code the daemon's report asks for."""
    os.waitpid(middle_pid, 0)
    deadline = time.monotonic() + READY_WAIT
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print(
                f"forkserve: daemon still starting after {READY_WAIT:.0f}s; not waiting any longer "
                "(see its error log)",
                file=sys.stderr,
            )
            return EXIT_OK
        if not select.select([read_fd], [], [], remaining)[0]:
            continue
        chunk = os.read(read_fd, 4096)
        if not chunk:
            break
        data += chunk
    word, _, rest = data.decode(errors="replace").strip().partition(" ")
    if word == "ready":
        return EXIT_OK
    if word == "fail":
        code_text, _, message = rest.partition(" ")
        print(f"forkserve: error: {message}", file=sys.stderr)
        return int(code_text) if code_text.isdigit() else EXIT_FAILURE
    print("forkserve: error: the daemon exited during start-up; see its error log", file=sys.stderr)
    return EXIT_FAILURE
