"""Hooks with gunicorn's names and arguments fire in order, in the right process; one that
raises is logged and changes nothing else."""

from __future__ import annotations

import signal

import requests
from conftest import wait_for

HOOKS = '''
import os
_LOG = {log!r}

def _note(*words):
    with open(_LOG, "a") as handle:
        handle.write(" ".join(str(word) for word in words) + "\\n")

def on_starting(server): _note("on_starting", os.getpid())
def when_ready(server):
    _note("when_ready", os.getpid())
    raise RuntimeError("a broken when_ready hook")
def pre_fork(server, worker): _note("pre_fork", os.getpid())
def post_fork(server, worker): _note("post_fork", os.getpid(), worker.pid == os.getpid())
def post_worker_init(worker): _note("post_worker_init", os.getpid(), worker.app is not None)
def pre_request(worker, req): _note("pre_request", os.getpid(), req.method, req.path)
def post_request(worker, req, environ, resp):
    _note("post_request", os.getpid(), req.path, environ["PATH_INFO"], resp.status)
def nworkers_changed(server, new_value, old_value): _note("nworkers_changed", os.getpid(), new_value, old_value)
def on_reload(server): _note("on_reload", os.getpid())
def worker_int(worker): _note("worker_int", os.getpid())
def worker_exit(server, worker): _note("worker_exit", os.getpid())
def child_exit(server, worker): _note("child_exit", os.getpid(), worker.pid)
def on_exit(server): _note("on_exit", os.getpid())
'''


def events(path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def names(path) -> list[str]:
    return [event[0] for event in events(path)]


def test_hooks_fire_in_order_in_the_right_process(start_server, tmp_path):
    log = tmp_path / "hooks.log"
    config = tmp_path / "forkserve.conf.py"
    config.write_text(HOOKS.format(log=str(log)))
    server = start_server("-c", str(config), "-w", "1", "supervision_app:application")
    master = str(server.pid)
    worker = str(server.wait_workers(1)[0])
    assert requests.get(server.url + "/hello", timeout=10).status_code == 200
    wait_for(lambda: "post_request" in names(log), 5, message="post_request")
    assert "hook when_ready raised; carrying on" in server.log()  # and the server serves anyway

    server.signal(signal.SIGTTIN)
    wait_for(lambda: names(log).count("post_worker_init") == 2, 10, message="the second worker")
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload complete" in server.log(), 15, message="the reload")
    server.signal(signal.SIGINT)
    assert server.wait_exit() == 0

    seen = events(log)
    in_master = [event[0] for event in seen if event[1] == master]
    probe = (["pre_request", worker, "GET", "/"], ["post_request", worker, "/", "/", "404", "Not", "Found"])
    in_worker = [event for event in seen if event[1] == worker and event not in probe]  # wait_ready's
    assert in_master[:3] == ["on_starting", "pre_fork", "when_ready"], in_master
    assert in_master[-1] == "on_exit"
    assert in_master.index("nworkers_changed") < in_master.index("on_reload") < in_master.index("on_exit")
    assert in_worker[:4] == [
        ["post_fork", worker, "True"],
        ["post_worker_init", worker, "True"],
        ["pre_request", worker, "GET", "/hello"],
        ["post_request", worker, "/hello", "/hello", "200", "OK"],
    ], in_worker
    assert ["nworkers_changed", master, "2", "1"] in seen
    # Causal order across processes: fork after pre_fork; reaped (child_exit) after worker_exit.
    assert seen.index(["pre_fork", master]) < seen.index(["post_fork", worker, "True"])
    assert seen.index(["worker_exit", worker]) < seen.index(["child_exit", master, worker])
    assert "worker_int" in [event[0] for event in seen]  # INT made the new workers exit at once
    assert seen[-1] == ["on_exit", master]
