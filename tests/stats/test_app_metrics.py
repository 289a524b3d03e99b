"""The app's prometheus_client metrics, merged across workers by the master's /metrics."""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import requests
from conftest import free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families

from forkserve.stats.top import fetch_stats, get


def app_samples(stats: str) -> dict[str, list]:
    text = get(stats, "/metrics")[1].decode()
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("shop_"):
            found[family.name] = family.samples
    return found


def test_counters_are_exact_and_dead_workers_gauges_vanish_across_recycling_and_hup(start_server):
    stats = f"127.0.0.1:{free_port()}"
    server = start_server("-w", "4", "--max-requests", "12", "--stats-bind", stats, "metrics_flask_app:app")
    directory = Path(next(line.split(" in ", 1)[1] for line in server.log().splitlines()
                          if "app metrics: prometheus_client multiprocess mode in" in line))
    assert directory.is_dir()
    sent = 0
    with requests.Session() as session:
        for round_number in range(3):
            for _ in range(40):
                assert session.get(server.url + f"/hit/r{round_number}", timeout=10).status_code == 200
                sent += 1
            if round_number == 1:
                old = set(server.workers())
                server.signal(signal.SIGHUP)
                wait_for(lambda old=old: not old & set(server.workers()) and len(server.workers()) == 4, 20,
                         message="the HUP's new workers, and the old ones gone")
    restarts = fetch_stats(stats)["restarts"]
    assert restarts["max_requests"] >= 4  # recycling happened along the way

    def settled():
        live = set(server.workers())
        samples = app_samples(stats)
        pids = {int(sample.value) for sample in samples.get("shop_worker_pid", [])}
        return samples if len(live) == 4 and pids == live else None

    samples = wait_for(settled, 15, message="only the live workers' gauges")
    hits = {sample.labels["path"]: sample.value for sample in samples["shop_hits"] if sample.name == "shop_hits_total"}
    assert hits == {"r0": 40, "r1": 40, "r2": 40}  # exact, though most of the counting workers are gone
    assert [sample.value for sample in samples["shop_worker_live"]] == [4.0]
    assert len(samples["shop_worker_pid"]) == 4  # no stale series of dead workers
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not directory.exists()


def test_a_killed_masters_directory_is_removed_by_the_next_one(start_server):
    orphan = Path(tempfile.gettempdir()) / "forkserve-app-metrics-999999999-test"
    orphan.mkdir(exist_ok=True)
    start_server("-w", "1", "ops_apps:queue_echo")
    assert not orphan.exists()


def test_the_environment_directory_is_used_and_kept(start_server, tmp_path):
    directory = tmp_path / "prom"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"stale")
    stats = f"127.0.0.1:{free_port()}"
    server = start_server("-w", "2", "--stats-bind", stats, "metrics_flask_app:app",
                          env={"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    assert not (directory / "counter_999999.db").exists()  # stale files go at start
    requests.get(server.url + "/hit/x", timeout=5)
    wait_for(lambda: app_samples(stats).get("shop_hits"), 5, message="the app's counter")
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert directory.is_dir()  # not ours to remove


def test_off_by_setting(start_server):
    stats = f"127.0.0.1:{free_port()}"
    server = start_server("-w", "1", "--no-app-metrics", "--stats-bind", stats, "ops_apps:queue_echo")
    assert requests.get(server.url + "/", timeout=5).status_code == 200
    assert "app metrics" not in server.log()
    assert get(stats, "/metrics")[0] == 200
