"""End to end: pid file, daemon, user/group, umask, raw_env, proc_name, state titles, --reload,
systemd socket activation and sd_notify — real masters, real workers, real signals."""

from __future__ import annotations

import contextlib
import os
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
from pathlib import Path

import pytest
import requests
from conftest import (
    APPS,
    ROOT,
    children_of,
    free_port,
    pid_alive,
    process_title,
    run_forkserve,
    wait_for,
)

NOBODY = 65534


def _status_ids(pid: int) -> dict[str, list[int]]:
    """Uid, Gid and Groups lines of /proc/PID/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            fields[key] = [int(item) for item in value.split()]
    return fields


def _kill_tree(pid: int) -> None:
    """Teardown for processes outside the fixture's process group (a daemon): its workers, then it."""
    for child in children_of(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# -- pidfile -----------------------------------------------------------------------------------


def test_pidfile_replaces_a_stale_file_refuses_a_live_master_and_is_removed_on_exit(start_server, tmp_path):
    pidfile = tmp_path / "forkserve.pid"
    finished = subprocess.Popen(["true"])  # a pid that is surely dead (and reaped) now
    finished.wait()
    dead_pid = finished.pid
    pidfile.write_text(f"{dead_pid}\n")

    server = start_server("-w", "1", "-p", str(pidfile), "simple_apps:hello")
    assert pidfile.read_text() == f"{server.pid}\n"
    assert f"names pid {dead_pid}, which is not a running forkserve master (stale); replacing it" in server.log()
    # (forkserve.ctl: the control socket, beside the pidfile by default)
    assert not [p for p in tmp_path.iterdir() if p.name not in ("forkserve.pid", "forkserve.ctl")], \
        "temporary file left behind"

    second = run_forkserve("-w", "1", "-b", f"127.0.0.1:{free_port()}", "-p", str(pidfile), "simple_apps:hello")
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"forkserve: error: pidfile {pidfile} names pid {server.pid}, a running forkserve master; stop it first"
    ]
    assert pidfile.read_text() == f"{server.pid}\n" and server.answers()

    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not pidfile.exists()


# -- daemon ------------------------------------------------------------------------------------


def test_daemon_returns_once_serving_writes_its_pid_and_stops_on_term(tmp_path):
    port = free_port()
    pidfile, log = tmp_path / "daemon.pid", tmp_path / "error.log"
    result = run_forkserve("-D", "-w", "2", "-b", f"127.0.0.1:{port}", "-p", str(pidfile),
                           "--error-logfile", str(log), "simple_apps:hello", timeout=30)
    daemon_pid = int(pidfile.read_text()) if pidfile.exists() else 0
    try:
        assert result.returncode == 0, result.stderr + (log.read_text() if log.exists() else "")
        assert result.stderr == ""
        # The launching command returned only once the workers serve: the first request answers.
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "Hello, world!"
        assert pid_alive(daemon_pid) and process_title(daemon_pid).startswith("forkserve: master")
        assert os.getsid(daemon_pid) != os.getsid(0), "the daemon must be in its own session"
        assert os.getsid(daemon_pid) != daemon_pid, "the daemon must not be a session leader"
        assert all(os.readlink(f"/proc/{daemon_pid}/fd/{fd}") == os.devnull for fd in (0, 1, 2))
        workers = wait_for(lambda: len(w := children_of(daemon_pid)) == 2 and w, 10, message="2 workers")

        os.kill(daemon_pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(daemon_pid) and not any(map(pid_alive, workers)), 15,
                 message="the daemon and its workers to exit")
        assert not pidfile.exists()
        assert "TERM received" in log.read_text()
    finally:
        if daemon_pid and pid_alive(daemon_pid):
            _kill_tree(daemon_pid)


def test_daemon_launcher_reports_a_failed_start_with_its_exit_code(tmp_path):
    log = tmp_path / "error.log"
    result = run_forkserve("-D", "-w", "1", "-b", f"127.0.0.1:{free_port()}", "--error-logfile", str(log),
                           "broken_at_import:application", timeout=30)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        f"forkserve: error: the server stopped during start-up (exit code 3); see {log} for why"
    ]
    assert "worker failed to boot" in log.read_text()


def test_daemon_with_a_taken_port_fails_on_the_terminal_before_detaching(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_forkserve("-D", "-b", f"127.0.0.1:{port}", "simple_apps:hello", timeout=30)
    assert result.returncode == 1
    assert f"cannot bind 127.0.0.1:{port}" in result.stderr
    assert "/dev/null once detached" in result.stderr  # the warning about errorlog '-'


# -- user / group ------------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="NOT TESTED: dropping to nobody needs root; run the suite as root")
def test_workers_run_as_user_and_group_and_can_reopen_their_logs(start_server):
    log_dir = Path(tempfile.mkdtemp(prefix="forkserve-priv-"))
    log_dir.chmod(0o755)  # nobody must be able to reach the log file to reopen it
    log = log_dir / "error.log"
    try:
        server = start_server("-w", "2", "-u", "nobody", "-g", "nogroup", "--error-logfile", str(log),
                              "proc_apps:inside")
        workers = server.wait_workers(2)

        def dropped(pid: int) -> bool:  # a worker still booting may not have dropped yet
            ids = _status_ids(pid)
            return ids["Uid"] == [NOBODY] * 4 and ids["Gid"] == [NOBODY] * 4 and ids["Groups"] == [NOBODY]

        wait_for(lambda: all(map(dropped, workers)), 10, message="both workers to run as nobody:nogroup")
        assert _status_ids(server.pid)["Uid"][0] == 0, "the master keeps its identity"
        seen = requests.get(server.url + "/", timeout=5).json()
        assert (seen["uid"], seen["gid"], seen["groups"]) == (NOBODY, NOBODY, [NOBODY])
        assert log.stat().st_uid == NOBODY

        # logrotate: move the file away, USR1; the master's new file is handed to nobody, so the
        # workers can reopen it (they would crash and be replaced otherwise).
        log.rename(log_dir / "error.log.1")
        server.signal(signal.SIGUSR1)
        wait_for(log.exists, 10, message="the master to reopen the error log")

        def marker_reaches_new_log() -> bool:
            marker = f"after-rotate-{uuid.uuid4().hex}"
            requests.get(server.url + f"/log?text={marker}", timeout=5)
            return marker in log.read_text()

        wait_for(marker_reaches_new_log, 10, interval=0.2, message="a worker to write to the new log")
        assert sorted(server.workers()) == sorted(workers), "a worker crashed while reopening its log"
        assert log.stat().st_uid == NOBODY
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


@pytest.mark.parametrize(("flag", "name", "what"), [("-u", "no-such-user-fs", "user"),
                                                    ("-g", "no-such-group-fs", "group")])
def test_unknown_user_or_group_is_a_one_line_config_error(flag, name, what):
    result = run_forkserve(flag, name, "simple_apps:hello")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"forkserve: error: setting '{what}': no such {what} '{name}'"]


# -- umask, raw_env, proc_name, titles ---------------------------------------------------------


def test_umask_raw_env_and_proc_name_reach_the_processes(start_server):
    server = start_server("-w", "1", "-m", "027", "-e", "FORKSERVE_TEST_VAR=from raw_env", "-n", "mysite",
                          "proc_apps:inside")
    seen = requests.get(server.url + "/", timeout=5).json()
    assert seen["umask"] == 0o027
    assert seen["env"] == {"FORKSERVE_TEST_VAR": "from raw_env"}
    (worker,) = server.wait_workers(1)
    wait_for(lambda: process_title(server.pid) == "forkserve: master [mysite] 1 worker", 10,
             message="the master's title")
    wait_for(lambda: re.fullmatch(r"forkserve: worker \[mysite\] idle \d+ reqs", process_title(worker)), 10,
             message="the worker's idle title")


def test_worker_title_shows_the_request_in_flight_then_idle(start_server):
    server = start_server("-w", "1", "-n", "titled", "proc_apps:inside")
    (worker,) = server.wait_workers(1)
    slow = threading.Thread(target=requests.get, args=(server.url + "/sleep?seconds=2",), kwargs={"timeout": 15})
    slow.start()
    try:
        title = wait_for(
            lambda: re.fullmatch(r"forkserve: worker \[titled\] busy GET /sleep\?seconds=2 (\d+\.\d)s",
                                 process_title(worker)),
            5, message="the busy title",
        )
        assert float(title.group(1)) < 10  # type: ignore[union-attr]
    finally:
        slow.join(15)
    wait_for(lambda: re.fullmatch(r"forkserve: worker \[titled\] idle [2-9]\d* reqs", process_title(worker)), 5,
             message="the idle title counting the sleep request")


# -- --reload ----------------------------------------------------------------------------------

RELOAD_APP = '''
import os

VERSION = {version!r}


def application(environ, start_response):
    body = f"{{VERSION}}|{{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def _write_source(path: Path, text: str, stamp: int) -> None:
    """Write and give the file a distinct whole-second mtime (pyc caches compare seconds and size)."""
    path.write_text(text)
    os.utime(path, (stamp, stamp))


def test_reload_serves_edits_from_a_new_worker_and_survives_a_broken_edit(start_server, tmp_path):
    source = tmp_path / "reload_app.py"
    stamp = int(time.time()) - 100
    _write_source(source, RELOAD_APP.format(version="one"), stamp)
    server = start_server("-w", "1", "--reload", "--chdir", str(tmp_path), "reload_app:application")

    def served() -> requests.Response:
        return requests.get(server.url + "/", timeout=5)

    version, first_pid = served().text.split("|")
    assert version == "one"

    _write_source(source, RELOAD_APP.format(version="two"), stamp + 10)
    reply = wait_for(lambda: (r := served()).text.startswith("two|") and r, 15, interval=0.1,
                     message="the edited app to be served")
    assert reply.text.split("|")[1] != first_pid  # type: ignore[union-attr]
    assert f"{source} changed; restarting" in server.log()

    _write_source(source, "def application(:\n", stamp + 20)
    (broken,) = wait_for(lambda: (r := served()).status_code == 500 and (r,), 15, interval=0.1,
                         message="the import error page")  # type: ignore[misc]
    assert "SyntaxError" in broken.text
    assert server.process.poll() is None, "a broken edit must not stop the development server"

    _write_source(source, RELOAD_APP.format(version="three"), stamp + 30)
    wait_for(lambda: served().text.startswith("three|"), 15, interval=0.1, message="the fixed app")


# -- systemd -----------------------------------------------------------------------------------

# Sets LISTEN_PID to its own pid, puts the passed socket on fd 3 and execs forkserve: what systemd does.
SOCKET_ACTIVATION_WRAPPER = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); "
    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='web'); "
    "os.execv(sys.executable, [sys.executable, '-m', 'forkserve', *sys.argv[2:]])"
)


def test_socket_activation_serves_on_the_passed_socket_and_hides_the_variables(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(APPS)])}
    for name in ("FORKSERVE_CMD_ARGS", "WEB_CONCURRENCY", "PORT"):
        env.pop(name, None)
    log = tmp_path / "log.txt"
    with log.open("wb") as log_handle:
        process = subprocess.Popen(
            [sys.executable, "-c", SOCKET_ACTIVATION_WRAPPER, str(listener.fileno()), "-w", "2", "proc_apps:inside"],
            pass_fds=[listener.fileno()], env=env, cwd=str(ROOT), stderr=log_handle, start_new_session=True,
        )
    listener.close()  # from now on only forkserve holds the socket
    try:
        seen = wait_for(lambda: _get_json(f"http://127.0.0.1:{port}/"), 15, interval=0.1,
                        message="forkserve to answer on the passed socket")
        assert seen["env"] == {}, "LISTEN_* must not reach the workers"  # type: ignore[index]
        assert f"listening at http://127.0.0.1:{port}" in log.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def _get_json(url: str) -> dict | None:
    try:
        return requests.get(url, timeout=2).json()
    except requests.RequestException:
        return None


def _receive(sock: socket.socket, wanted: str, timeout: float = 15.0) -> dict[str, str]:
    """The next sd_notify message carrying ``wanted`` (e.g. READY=1), as a dict of its fields."""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            lines = sock.recv(4096).decode().splitlines()
        except TimeoutError:
            raise AssertionError(f"no {wanted} from forkserve within {timeout}s") from None
        if wanted in lines:
            return dict(line.partition("=")[::2] for line in lines)


def test_sd_notify_ready_after_the_app_is_loaded_then_reloading_and_stopping(start_server, tmp_path):
    name = f"forkserve-test-{uuid.uuid4().hex}"
    markers = tmp_path / "booted"
    markers.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind("\0" + name)  # abstract namespace: NOTIFY_SOCKET=@name
        server = start_server("-w", "2", "slow_boot_app:application", ready=False, env={
            "NOTIFY_SOCKET": "@" + name, "SLOW_BOOT_SECONDS": "1", "SLOW_BOOT_MARKERS": str(markers),
        })
        ready = _receive(notify, "READY=1")
        # READY=1 only once both workers finished importing the (slow) app.
        assert len(list(markers.iterdir())) == 2
        assert ready["MAINPID"] == str(server.pid) and ready["STATUS"] == "2 workers serving"
        assert server.answers()

        server.signal(signal.SIGHUP)
        reloading = _receive(notify, "RELOADING=1")
        assert reloading["MONOTONIC_USEC"].isdigit()
        _receive(notify, "READY=1")

        server.signal(signal.SIGTERM)
        _receive(notify, "STOPPING=1")
        assert server.wait_exit() == 0


def test_master_shares_openssl_and_loads_no_email_or_idna_codec(start_server):
    """Worker memory: OpenSSL (hashlib) is set up once in the master and shared copy-on-write,
    while the email package and the idna codec (with unicodedata), which forkserve itself does
    not need, are never loaded before the app — each would add to every worker's memory."""
    server = start_server("import_probe:application", "-w", "1")
    assert requests.get(server.url + "/", timeout=10).json() == ["_hashlib"]
