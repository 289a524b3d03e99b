"""HUP end to end: a new configuration and freshly imported code under load with no failed
request, rolling replacement, reloads that fail and keep the old workers, and preload."""

from __future__ import annotations

import json
import re
import signal

import pytest
import requests
from conftest import wait_for
from loadclient import LoadLoop

APP = "supervision_app:application"


def version(server) -> dict:
    return json.loads(requests.get(server.url + "/version", timeout=10).text)


def app_env(tmp_path, text: str = "v1") -> dict[str, str]:
    (tmp_path / "version").write_text(text)
    return {"SUPERVISION_APP_VERSION_FILE": str(tmp_path / "version"),
            "SUPERVISION_APP_FAIL_FILE": str(tmp_path / "fail")}


def test_hup_under_load_reloads_config_file_and_app_code(start_server, tmp_path):
    config = tmp_path / "forkserve.conf.py"
    config.write_text("workers = 2\nraw_env = ['GREETING=one']\n")
    server = start_server("-c", str(config), APP, env=app_env(tmp_path))
    old = server.wait_workers(2)
    assert {key: version(server)[key] for key in ("version", "greeting")} == {"version": "v1", "greeting": "one"}
    with LoadLoop(server.connect) as load:
        load.wait_ok(20)
        (tmp_path / "version").write_text("v2 (a longer text)")
        config.write_text("workers = 3\nraw_env = ['GREETING=two']\n")
        server.signal(signal.SIGHUP)
        wait_for(lambda: "reload complete" in server.log(), 20, message="the reload")
        wait_for(lambda: not set(old) & set(server.workers()), 20, message="old workers to exit")
        load.wait_ok(20)
    assert load.failures == []
    assert len(server.wait_workers(3)) == 3  # the file's new worker count
    now = version(server)
    assert (now["version"], now["greeting"]) == ("v2 (a longer text)", "two")
    assert now["imported_in"] == now["pid"]  # imported by the worker, not the master


@pytest.mark.slow
def test_rolling_hup_replaces_one_worker_at_a_time_under_load(start_server, tmp_path):
    config = tmp_path / "forkserve.conf.py"
    config.write_text(
        "import os, sys, time\n"
        "def post_worker_init(worker):\n"
        "    time.sleep(1.2)  # a boot slower than the master's tick: old workers must wait\n"
        "    print(f'initialised {os.getpid()}', file=sys.stderr, flush=True)\n"
    )
    server = start_server("-c", str(config), "-w", "2", "--reload-strategy", "rolling", APP)
    old = server.wait_workers(2)
    with LoadLoop(server.connect) as load:
        load.wait_ok(20)
        server.signal(signal.SIGHUP)
        wait_for(lambda: "reload complete" in server.log(), 30, message="the rolling reload")
        wait_for(lambda: not set(old) & set(server.workers()), 20, message="old workers to exit")
        load.wait_ok(20)
    assert load.failures == []
    after_hup = server.log().split("HUP received", 1)[1].split("reload complete", 1)[0]
    steps = re.findall(r"booting worker (\d+)|initialised (\d+)|new worker (\d+) is ready; stopping old", after_hup)
    # One at a time: each new worker boots, finishes initialising, and only then an old one stops.
    assert len(steps) == 6, after_hup
    for boot, init, stop in zip(steps[0::3], steps[1::3], steps[2::3], strict=True):
        assert boot[0] and boot[0] == init[1] == stop[2], after_hup


def test_failed_reloads_keep_the_old_workers_serving(start_server, tmp_path):
    config = tmp_path / "forkserve.conf.py"
    config.write_text("workers = 2\n")
    server = start_server("-c", str(config), APP, env=app_env(tmp_path))
    old = sorted(server.wait_workers(2))

    config.write_text("workers = 'many'\n")  # a bad config file
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed: setting 'workers'" in server.log(), 10, message="config failure")
    config.write_text("workers = 2\n")

    (tmp_path / "fail").write_text("raise")  # new workers cannot import the app
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload abandoned" in server.log(), 20, message="boot failure of new workers")
    log = server.log()
    assert "supervision_app is broken on purpose" in log
    assert sorted(server.wait_workers(2)) == old
    assert version(server)["version"] == "v1"
    assert server.process.poll() is None

    (tmp_path / "fail").unlink()  # fixed: the next HUP goes through
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload complete" in server.log(), 20, message="the reload")
    wait_for(lambda: not set(old) & set(server.workers()), 20, message="old workers to exit")


def test_preload_imports_in_master_and_hup_imports_again(start_server, tmp_path):
    server = start_server("-w", "2", "--preload", APP, env=app_env(tmp_path))
    first = version(server)
    assert first["imported_in"] == server.pid != first["pid"]  # forked copy-on-write
    old = server.wait_workers(2)

    (tmp_path / "version").write_text("v2 (reimported)")
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload complete" in server.log(), 20, message="the reload")
    wait_for(lambda: not set(old) & set(server.workers()), 20, message="old workers to exit")
    second = version(server)
    assert second["version"] == "v2 (reimported)" and second["imported_in"] == server.pid

    serving = sorted(server.workers())
    (tmp_path / "fail").write_text("raise")
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in server.log(), 10, message="the failed import in the master")
    assert "supervision_app is broken on purpose" in server.log()
    assert sorted(server.workers()) == serving
    assert version(server)["version"] == "v2 (reimported)"
