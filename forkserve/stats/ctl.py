"""``forkserve ctl``: operate a running server through its control socket.

``forkserve ctl [--socket PATH] [--json] COMMAND``, where COMMAND is ``status``, ``workers N``,
``reload``, ``reopen-logs``, ``stop [--graceful]`` or ``stacks``. The socket defaults to
``$FORKSERVE_CONTROL_SOCKET``, else ``$XDG_RUNTIME_DIR/forkserve.ctl``, else ``./forkserve.ctl``
(the server's own default when it has no pidfile). Every failure is one line on stderr and exit
code 1: no socket there, nothing listening (the server is not running), permission denied.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from forkserve.process.exits import EXIT_FAILURE, EXIT_OK
from forkserve.stats.top import render_frame

DEFAULT_NAME = "forkserve.ctl"
TIMEOUT = 10.0
MAX_REPLY = 64 * 1024 * 1024


class ControlError(Exception):
    """The command could not be carried out; the message is one line."""


def default_socket() -> str:
    explicit = os.environ.get("FORKSERVE_CONTROL_SOCKET")
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, DEFAULT_NAME)
    return os.path.join(os.getcwd(), DEFAULT_NAME)


def call(path: str, command: str, args: Sequence[str] = (), timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one command; the reply's ``text``/``data``. Raises ControlError."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall((json.dumps({"command": command, "args": list(args)}) + "\n").encode())
            chunks: list[bytes] = []
            size = 0
            while size < MAX_REPLY and (chunk := sock.recv(1 << 16)):
                chunks.append(chunk)
                size += len(chunk)
    except FileNotFoundError:
        raise ControlError(f"no control socket at {path}: is the server running? "
                           "(give --socket the server's control_socket)") from None
    except ConnectionRefusedError:
        raise ControlError(f"nothing listens on {path}: the server is not running (a stale socket file)") from None
    except PermissionError:
        raise ControlError(f"permission denied on {path}: only the server's user and root may use it") from None
    except TimeoutError:
        raise ControlError(f"no answer from {path} within {timeout:g}s") from None
    except OSError as error:
        raise ControlError(f"cannot use {path}: {error.strerror or error}") from None
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError(f"{path} did not answer as a forkserve control socket does") from None
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "refused")))
    return reply


def status_text(stats: dict[str, Any], path: str) -> str:
    """The /stats document as ``forkserve top --once`` shows it."""
    return "\n".join(line for line in render_frame(stats, path)[:-2]).rstrip() + "\n"


def main(argv: Sequence[str]) -> int:
    """``forkserve ctl [--socket PATH] [--json] COMMAND [ARGS]``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="forkserve ctl", description="Operate a running forkserve server.")
    parser.add_argument("--socket", metavar="PATH", default=None,
                        help="the server's control_socket (default: $FORKSERVE_CONTROL_SOCKET, "
                             "$XDG_RUNTIME_DIR/forkserve.ctl or ./forkserve.ctl)")
    parser.add_argument("--json", action="store_true", help="print the reply as JSON")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("status", help="workers, threads, states, current requests (what /stats knows)")
    workers = commands.add_parser("workers", help="set the worker count")
    workers.add_argument("count", type=int)
    commands.add_parser("reload", help="reload the configuration and the app (HUP)")
    commands.add_parser("reopen-logs", help="reopen the log files (USR1)")
    stop = commands.add_parser("stop", help="stop the server: fast (QUIT), or --graceful (TERM)")
    stop.add_argument("--graceful", action="store_true")
    commands.add_parser("stacks", help="every worker's every thread's Python stack, now")
    args = parser.parse_args(list(argv))
    path = args.socket or default_socket()
    extra = [str(args.count)] if args.command == "workers" else (
        ["--graceful"] if args.command == "stop" and args.graceful else [])
    try:
        reply = call(path, args.command, extra)
    except ControlError as error:
        print(f"forkserve ctl: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(reply.get("data", reply.get("text")), indent=1))
    elif args.command == "status":
        sys.stdout.write(status_text(reply["data"], path))
    else:
        sys.stdout.write(str(reply.get("text", "")).rstrip("\n") + "\n")
    return EXIT_OK
