"""Unit tests of the master's process model: pid files, socket activation and sd_notify.
The end-to-end behaviour is in test_process_model.py."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from forkserve.master import pidfile, systemd

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
