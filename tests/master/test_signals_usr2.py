"""USR2: a new master inherits the listening sockets; the old one keeps serving until TERM.
Under load, across the handover, no request fails; a new master that cannot start changes
nothing."""

from __future__ import annotations

import os
import signal
import socket

import pytest
from conftest import children_of, free_port, pid_alive, raw_exchange, status_of, wait_for
from loadclient import LoadLoop

from forkserve.master.upgrade import READY_WITH_STATS, Handover, handed_over, tell_old_master_ready
from forkserve.process.sockets import create_listeners
from forkserve.stats.top import StatsUnavailable, fetch_stats, get

APP = "supervision_app:application"
GET = b"GET /hello HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


def read_pid(path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def test_usr2_then_term_of_the_old_master_under_load(start_server, tmp_path):
    pid_path = tmp_path / "forkserve.pid"
    unix_path = str(tmp_path / "forkserve.sock")
    server = start_server("-w", "2", "-p", str(pid_path), "-b", f"unix:{unix_path}", APP, address=unix_path)
    old_workers = server.wait_workers(2)

    def connect_unix(timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(unix_path)
        return sock

    with LoadLoop(connect_unix) as load:
        load.wait_ok(20)
        server.signal(signal.SIGUSR2)
        new_master = wait_for(lambda: read_pid(tmp_path / "forkserve.pid.2"), 20, message="forkserve.pid.2")
        assert new_master in children_of(server.pid)
        wait_for(lambda: len([p for p in children_of(new_master) if pid_alive(p)]) == 2, 20,
                 message="the new master's workers")
        load.wait_ok(20)
        server.signal(signal.SIGTERM)
        assert server.wait_exit(20) == 0
        assert not any(pid_alive(pid) for pid in old_workers)
        wait_for(lambda: read_pid(pid_path) == new_master and not (tmp_path / "forkserve.pid.2").exists(),
                 10, message="the new master to take over the pidfile")
        load.wait_ok(30)
    assert load.failures == []
    log = server.log()
    assert f"upgrade: took over the listening sockets of master {server.pid}" in log
    assert os.path.exists(unix_path)  # the new master still uses it

    os.kill(new_master, signal.SIGTERM)
    wait_for(lambda: not pid_alive(new_master), 20, message="the new master to exit")
    assert not os.path.exists(unix_path) and not pid_path.exists()


def test_new_master_that_cannot_start_leaves_the_old_one_serving(start_server, tmp_path):
    config = tmp_path / "forkserve.conf.py"
    marker = tmp_path / "pre_exec"
    config.write_text(f"def pre_exec(server):\n    open({str(marker)!r}, 'w').write(str(server.pid))\n")
    server = start_server("-c", str(config), "-w", "1", APP)
    workers = server.wait_workers(1)
    config.write_text("workers = 'many'\n")  # the new master will refuse this configuration
    server.signal(signal.SIGUSR2)
    wait_for(lambda: "(USR2 upgrade) ended: exit code 2; this master keeps serving" in server.log(), 20,
             message="the new master's failure")
    assert marker.read_text() == str(server.pid)
    assert server.workers() == workers
    assert status_of(raw_exchange(server, GET)) == 200


def test_handed_over_sockets_are_adopted_by_address_and_new_binds_are_bound(tmp_path):
    old = create_listeners(["127.0.0.1:0", f"unix:{tmp_path / 'a.sock'}"], 16)
    port = old[0].server_port
    try:
        fresh = free_port()
        new = create_listeners(
            [f"unix:{tmp_path / 'a.sock'}", f"127.0.0.1:{fresh}"], 16,
            handed_over=[listener.fileno() for listener in old],
        )
        try:
            by_spec = {listener.spec: listener for listener in new}
            assert by_spec[f"unix:{tmp_path / 'a.sock'}"].fileno() == old[1].fileno()  # adopted
            assert not by_spec[f"unix:{tmp_path / 'a.sock'}"].owns_path  # the old master's file
            assert by_spec[f"127.0.0.1:{fresh}"].server_port == str(fresh)  # bound anew
            kept = [listener for listener in new if listener.fileno() == old[0].fileno()]
            assert kept and kept[0].server_port == port  # no longer configured, still kept
        finally:
            for listener in new:
                if listener.fileno() not in {item.fileno() for item in old}:
                    listener.close()
    finally:
        for listener in old:
            listener.close()


@pytest.mark.parametrize("stats_kind", ["tcp", "unix"])
def test_usr2_hands_over_the_stats_endpoint(start_server, tmp_path, stats_kind):
    # The stats socket goes to the new master with the serving sockets. Only one master answers
    # it at a time: the old one until the new one's workers are all up, so /readyz never fails
    # during the upgrade (a load balancer would take the server out), then the new one.
    stats = f"127.0.0.1:{free_port()}" if stats_kind == "tcp" else f"unix:{tmp_path / 'stats.sock'}"
    pid_path = tmp_path / "forkserve.pid"
    # With a shutdown_delay, which TERM skips while the other master serves the same sockets.
    server = start_server("-w", "2", "-p", str(pid_path), "--stats-bind", stats, "--shutdown-delay", "120", APP)
    server.wait_workers(2)
    assert fetch_stats(stats)["master_pid"] == server.pid
    server.signal(signal.SIGUSR2)
    readiness = []

    def answering_master() -> int:
        readiness.append(get(stats, "/readyz")[0])
        return fetch_stats(stats)["master_pid"]

    new_master = wait_for(lambda: read_pid(tmp_path / "forkserve.pid.2"), 20, message="forkserve.pid.2")
    handed = f"new master {new_master} is ready; it answers the stats endpoint from now on"
    wait_for(lambda: answering_master() and handed in server.log(), 20, message="the stats hand-over")
    assert set(readiness) == {200}, readiness
    # (The old master logs the hand-over once it has stopped accepting.)
    assert {answering_master() for _ in range(10)} == {new_master}
    assert len(fetch_stats(stats)["workers"]) == 2  # the new master's own

    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 0  # no 120 s wait
    assert "TERM received: graceful shutdown" in server.log()
    status, metrics = get(stats, "/metrics")
    new_workers = [pid for pid in children_of(new_master) if pid_alive(pid)]
    assert status == 200 and len(new_workers) == 2, (status, new_workers)
    for pid in new_workers:  # the new master's workers, reported by the new master
        assert f'forkserve_worker_rss_bytes{{pid="{pid}"'.encode() in metrics, metrics.decode()
    assert b"\nforkserve_ready 1\n" in metrics
    assert get(stats, "/readyz")[0] == 200

    os.kill(new_master, signal.SIGTERM)  # alone now: it drains, and says so on the same address
    wait_for(lambda: get(stats, "/readyz") == (503, b"fail: draining\n"), 10, message="the new master draining")
    os.kill(new_master, signal.SIGTERM)
    wait_for(lambda: not pid_alive(new_master), 20, message="the new master to exit")
    if stats_kind == "unix":
        assert not (tmp_path / "stats.sock").exists()  # the new master owned the file in the end
    with pytest.raises(StatsUnavailable):
        get(stats, "/healthz", timeout=1)


def test_handover_variables_are_read_once_and_removed():
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)  # as the old master passes it
    try:
        environ = {"FORKSERVE_FDS": "5,6", "FORKSERVE_FDS_PID": str(os.getpid()), "FORKSERVE_OLD_MASTER": "42",
                   "FORKSERVE_STATS_FD": "7", "FORKSERVE_READY_FD": str(write_end), "OTHER": "kept"}
        handover = handed_over(environ)
        assert (handover.fds, handover.old_master, handover.stats_fd, handover.ready_fd) == ([5, 6], 42, 7, write_end)
        assert environ == {"OTHER": "kept"}  # the app and a later upgrade never see them
        assert not os.get_inheritable(write_end)  # nor do the app's subprocesses inherit the pipe
        tell_old_master_ready(write_end, took_stats=True)  # (closes it)
        assert os.read(read_end, 8) == READY_WITH_STATS
        # Variables meant for another process (a grandchild that inherited them) are dropped.
        stale = {"FORKSERVE_FDS": "5", "FORKSERVE_FDS_PID": "1", "FORKSERVE_READY_FD": "9"}
        assert handed_over(stale) == Handover() and stale == {}
    finally:
        os.close(read_end)
