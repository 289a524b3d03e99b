"""Unit tests of the process model's pure parts: pid files, sd_notify, titles, the reload watch,
user/group resolution. The end-to-end behaviour is in test_process_model.py."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import forkserve
from forkserve.master import pidfile, systemd
from forkserve.master.reload import is_app_module
from forkserve.process import privileges
from forkserve.process.loader import library_roots
from forkserve.process.proctitle import master_title, worker_title
from forkserve.process.scoreboard import SlotView, State
from forkserve.settings.registry import defaults
from forkserve.worker.reloader import Reloader

# -- pidfile -----------------------------------------------------------------------------------


def test_pidfile_write_is_atomic_and_remove_only_takes_our_own(tmp_path):
    path = str(tmp_path / "app.pid")
    pidfile.write(path)
    assert Path(path).read_text() == f"{os.getpid()}\n"
    assert os.listdir(tmp_path) == ["app.pid"]
    assert pidfile.check(path) is None  # our own pid: not someone else's server

    pidfile.write(path, pid=1)  # as if a new master had taken it over
    assert pidfile.remove(path) is False and Path(path).read_text() == "1\n"
    pidfile.write(path)
    assert pidfile.remove(path) is True and not os.path.exists(path)


def test_pidfile_check_replaces_dead_and_foreign_pids_and_garbage(tmp_path):
    path = tmp_path / "app.pid"
    finished = subprocess.Popen(["true"])
    finished.wait()
    path.write_text(f"{finished.pid}\n")
    assert "(stale); replacing it" in (pidfile.check(str(path)) or "")

    with subprocess.Popen(["sleep", "30"]) as other:  # alive, but not a forkserve master
        try:
            path.write_text(f"{other.pid}\n")
            assert "not a running forkserve master" in (pidfile.check(str(path)) or "")
        finally:
            other.kill()

    path.write_text("not a pid\n")
    assert pidfile.check(str(path)) == f"pidfile {path} holds no pid; replacing it"


def test_pidfile_check_refuses_a_directory_that_does_not_exist(tmp_path):
    with pytest.raises(pidfile.PidfileError, match="does not exist"):
        pidfile.check(str(tmp_path / "missing" / "app.pid"))


def test_pidfile_promote_moves_our_second_file_over_the_first(tmp_path):
    first, second = str(tmp_path / "app.pid"), str(tmp_path / "app.pid.2")
    pidfile.write(second)
    assert pidfile.path_for_this_master(first) == first  # no file naming our parent
    assert pidfile.promote(second, first) is True
    assert Path(first).read_text() == f"{os.getpid()}\n" and not os.path.exists(second)


# -- systemd -----------------------------------------------------------------------------------


def test_listen_fds_are_taken_only_for_our_pid_and_the_variables_always_cleared():
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b", "OTHER": "x"}
    assert systemd.take_listen_fds(env) == [3, 4]
    assert env == {"OTHER": "x"}
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1"}
    assert systemd.take_listen_fds(env) == [] and env == {}


def test_notify_address_forms():
    assert systemd.notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert systemd.notify_address("@abstract/name") == b"\0abstract/name"
    assert systemd.notify_address("") is None
    assert systemd.notify_address("vsock:2:1234") is None


def test_notifier_sends_datagrams_to_a_path_socket():
    directory = tempfile.mkdtemp(prefix="fs-notify-")  # short: unix socket paths are limited
    path = os.path.join(directory, "notify")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
            receiver.bind(path)
            receiver.settimeout(5)
            notifier = systemd.Notifier({"NOTIFY_SOCKET": path})
            notifier.ready("2 workers serving")
            assert receiver.recv(4096).decode().splitlines() == [
                "READY=1", "STATUS=2 workers serving", f"MAINPID={os.getpid()}"
            ]
            notifier.stopping()
            assert receiver.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
            notifier.close()
    finally:
        os.unlink(path)
        os.rmdir(directory)


def test_notifier_without_notify_socket_does_nothing():
    notifier = systemd.Notifier({})
    assert not notifier.enabled
    notifier.ready("x")
    assert notifier.sock is None


# -- titles ------------------------------------------------------------------------------------


def _view(state: State, start: float = 0.0, requests: int = 0, line: str = "") -> SlotView:
    return SlotView(0, 123, state, start, 0.0, requests, line, 0.0)


def test_titles_show_state():
    assert worker_title("app", _view(State.BUSY, 100.0, 5, "GET /path"), 101.24) == "worker [app] busy GET /path 1.2s"
    assert worker_title("app", _view(State.IDLE, requests=1234), 0) == "worker [app] idle 1234 reqs"
    assert worker_title("app", _view(State.STOPPING), 0) == "worker [app] stopping"
    assert master_title("app", 1) == "master [app] 1 worker"
    assert master_title("app", 4) == "master [app] 4 workers"
    assert master_title("app", 4, draining=True) == "master [app] 4 workers, draining"


# -- reload watch ------------------------------------------------------------------------------


def test_reloader_reports_a_changed_extra_file_and_a_created_one(tmp_path):
    watched, later = tmp_path / "settings.toml", tmp_path / "later.txt"
    watched.write_text("a")
    reloader = Reloader([str(watched), str(later)])
    assert reloader.changed() is None
    os.utime(watched, (1_000_000, 1_000_000))
    assert reloader.changed() == str(watched)
    reloader = Reloader([str(later)])
    assert reloader.changed() is None
    later.write_text("now")
    assert reloader.changed() == str(later)


def test_reloader_watches_app_modules_not_the_library():
    reloader = Reloader()
    files = reloader.watched()
    assert __file__ in files  # this test module is "the app" here
    assert not any(path.endswith(("/os.py", "/forkserve/worker/worker.py")) for path in files)
    assert not any("site-packages" in path for path in files)


def test_every_folder_of_forkserve_is_library_to_the_reloader_and_the_preload_reload():
    """--reload and a preload HUP tell forkserve's modules from the app's by the package's own
    directory, found from the package: no module of forkserve is app code, however deep it sits."""
    assert os.path.join(os.path.dirname(os.path.realpath(forkserve.__file__)), "") in library_roots()
    reloader = Reloader()
    for name in ("forkserve.cli", "forkserve.master.reload", "forkserve.worker.reloader",
                 "forkserve.http.connection", "forkserve.settings.docs"):
        module = importlib.import_module(name)
        assert not is_app_module(module) and not reloader.is_app_file(module.__file__), name
    assert is_app_module(sys.modules[__name__]) and reloader.is_app_file(__file__)  # the "app" here


# -- user / group ------------------------------------------------------------------------------


def _config(user=None, group=None):
    config = defaults()
    config.set("user", user, "test")
    config.set("group", group, "test")
    return config


def test_resolve_identity_from_names_and_ids():
    assert privileges.resolve(_config()) is None
    if os.geteuid() != 0:
        with pytest.raises(privileges.PrivilegeError, match="need the master to run as root"):
            privileges.resolve(_config("nobody"))
        return
    nobody = privileges.resolve(_config("nobody"))
    assert nobody is not None and (nobody.uid, nobody.username) == (65534, "nobody")
    assert nobody.gid == 65534  # nobody's primary group, not the master's
    assert privileges.resolve(_config(65534, "nogroup")) == privileges.Identity(65534, 65534, "nobody")
    assert privileges.resolve(_config(None, 65534)) == privileges.Identity(0, 65534, None)


def test_resolve_refuses_unknown_names_and_a_bare_uid_without_group():
    with pytest.raises(privileges.PrivilegeError, match="no such user 'no-such-user-fs'"):
        privileges.resolve(_config("no-such-user-fs"))
    with pytest.raises(privileges.PrivilegeError, match="no such group 'no-such-group-fs'"):
        privileges.resolve(_config(None, "no-such-group-fs"))
    with pytest.raises(privileges.PrivilegeError, match="set 'group' too"):
        privileges.resolve(_config(54321))
