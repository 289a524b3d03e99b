"""The control socket and ``forkserve ctl``: status, workers, reload, reopen-logs, stacks, stop,
and who may use it (another user is refused: by the file mode, and by SO_PEERCRED)."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest
import requests
from conftest import ROOT, wait_for

from forkserve.stats.ctl import main as ctl_main


def ctl(*args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    """Run ``forkserve ctl``."""
    return subprocess.run([sys.executable, "-m", "forkserve", "ctl", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})


def ctl_as(uid: int, *args: str) -> tuple[int, str]:
    """``forkserve ctl`` run by another user: a forked child that drops to ``uid`` (this machine's
    Python lives where other users cannot execute it), its exit code and stderr."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(pwd.getpwuid(uid).pw_gid)
            os.setuid(uid)
            sys.stderr = os.fdopen(write, "w")
            code = ctl_main(list(args))
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), text


@pytest.fixture
def socket_dir():
    """A directory every user may enter (pytest's tmp_path is root's alone)."""
    path = tempfile.mkdtemp(prefix="forkserve-ctl-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_status_workers_reopen_reload_and_graceful_stop(start_server, socket_dir):
    path = os.path.join(socket_dir, "ctl.sock")
    server = start_server("-w", "2", "--threads", "2", "--control-socket", path, "ops_apps:stuck")
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    status = ctl("--socket", path, "status")
    assert status.returncode == 0, status.stderr
    assert "workers 2/2" in status.stdout and "threads" in status.stdout
    document = json.loads(ctl("--socket", path, "--json", "status").stdout)
    assert sorted(worker["pid"] for worker in document["workers"]) == sorted(server.workers())
    assert all(len(worker["threads"]) == 2 for worker in document["workers"])

    grown = ctl("--socket", path, "workers", "3")
    assert grown.stdout.strip() == "worker count 2 -> 3"
    server.wait_workers(3)
    assert ctl("--socket", path, "workers", "1").returncode == 0
    server.wait_workers(1)
    assert "at least 1" in ctl("--socket", path, "workers", "0").stderr

    assert ctl("--socket", path, "reopen-logs").returncode == 0
    wait_for(lambda: "USR1 received" in server.log(), 5, message="the reopen")
    old = set(server.workers())
    assert ctl("--socket", path, "reload").returncode == 0
    wait_for(lambda: set(server.workers()) and not old & set(server.workers()), 15, message="a reload")

    stopped = ctl("--socket", path, "stop", "--graceful")
    assert stopped.stdout.strip() == "graceful stop asked (as TERM)"
    assert server.wait_exit() == 0
    assert "TERM received: graceful shutdown" in server.log()
    assert not os.path.exists(path)


def _get_quietly(url: str) -> None:
    with contextlib.suppress(requests.RequestException):  # the server is killed under it
        requests.get(url, timeout=30)


def test_stacks_shows_every_thread_live_and_a_worker_stuck_in_c_does_not_hang_it(start_server, socket_dir):
    path = os.path.join(socket_dir, "ctl.sock")
    server = start_server("-w", "2", "--timeout", "60", "--control-socket", path, "ops_apps:stuck")
    # One worker sleeps in the app (its signal handlers can run); the other holds the GIL in C.
    for target in ("/sleep?5", "/c?4"):
        threading.Thread(target=_get_quietly, args=(server.url + target,), daemon=True).start()
        wait_for(lambda target=target: target.split("?")[0] in ctl("--socket", path, "status").stdout, 5,
                 message=f"{target} in the app")
    started = time.monotonic()
    stacks = ctl("--socket", path, "stacks")
    took = time.monotonic() - started
    assert stacks.returncode == 0, stacks.stderr
    assert took < 5, took
    text = stacks.stdout
    assert text.startswith("2 worker(s)")
    assert len(re.findall(r"^=== worker \d+ ", text, re.MULTILINE)) == 2
    assert re.search(r"MainThread, busy: GET /sleep\?5 for [\d.]+s\) \(most recent call first\):\n"
                     r"  File \".*ops_apps.py\", line \d+ in stuck", text), text
    assert "forkserve-monitor" in text
    # The worker stuck in C still wrote its stacks (from faulthandler's C handler), by thread id.
    assert re.search(r"ops_apps.py\", line \d+ in stuck_in_c", text), text
    assert "(incomplete: it did not finish within 2s; its main thread may be stuck in C code)" in text, text
    assert all(pid in server.workers() for pid in map(int, re.findall(r"=== worker (\d+)", text)))  # none stopped
    os.killpg(server.pid, signal.SIGKILL)  # (a graceful stop would wait for the worker stuck in C)


def test_errors_are_one_clear_line(socket_dir):
    missing = ctl("--socket", os.path.join(socket_dir, "none.sock"), "status")
    assert missing.returncode == 1
    assert missing.stderr.startswith("forkserve ctl: error: no control socket at ") and missing.stderr.count("\n") == 1
    stale = os.path.join(socket_dir, "stale.sock")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(stale)
    refused = ctl("--socket", stale, "status")
    assert refused.returncode == 1 and "the server is not running" in refused.stderr


@pytest.fixture
def other_user():
    """A system user of its own, removed afterwards."""
    name = f"fsctl{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name).pw_uid
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def test_another_user_is_refused_by_the_file_mode_and_by_its_credentials(start_server, socket_dir, other_user):
    private = os.path.join(socket_dir, "private.sock")
    start_server("-w", "1", "--control-socket", private, "ops_apps:stuck")
    code, stderr = ctl_as(other_user, "--socket", private, "status")
    assert code == 1
    assert stderr.strip() == (f"forkserve ctl: error: permission denied on {private}: only the server's "
                                     "user and root may use it")
    # Even with a socket file anyone may open, the master checks who is calling.
    open_to_all = os.path.join(socket_dir, "open.sock")
    server = start_server("-w", "1", "--control-socket", open_to_all, "--control-socket-mode", "0o666",
                          "ops_apps:stuck")
    code, stderr = ctl_as(other_user, "--socket", open_to_all, "stop")
    assert code == 1
    assert stderr.strip() == (f"forkserve ctl: error: permission denied: uid {other_user} is neither the "
                                      f"server's user (uid {os.geteuid()}) nor root")
    assert server.process.poll() is None  # not stopped
    wait_for(lambda: f"refused a client running as uid {other_user}" in server.log(), 5, message="the log line")
    assert ctl("--socket", open_to_all, "status").returncode == 0  # root still may
