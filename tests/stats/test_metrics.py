"""/metrics: Prometheus text that a stock parser accepts, with counters matching what was served."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from collections import Counter as Tally

import pytest
import requests
from conftest import free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families

from forkserve.process.scoreboard import DURATION_BUCKETS, Counters, Scoreboard, State
from forkserve.stats.backlog import QueueDepth
from forkserve.stats.metrics import (
    ListenerStats,
    Snapshot,
    Telemetry,
    WorkerStats,
    render_prometheus,
    restart_reason_key,
)
from forkserve.stats.top import get

FAMILY_TYPES = {
    "forkserve_requests": "counter",
    "forkserve_request_duration_seconds": "histogram",
    "forkserve_request_queue_seconds": "histogram",
    "forkserve_requests_shed": "counter",
    "forkserve_connections": "gauge",
    "forkserve_threads": "gauge",
    "forkserve_response_bytes": "counter",
    "forkserve_workers": "gauge",
    "forkserve_workers_target": "gauge",
    "forkserve_worker_restarts": "counter",
    "forkserve_listen_queue_depth": "gauge",
    "forkserve_listen_queue_limit": "gauge",
    "forkserve_worker_rss_bytes": "gauge",
    "forkserve_uptime_seconds": "gauge",
    "forkserve_ready": "gauge",
    "forkserve_build_info": "gauge",
}


def parse_strictly(text: str) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """Parse with prometheus_client, then check what it tolerates: every sample in a declared
    family of the expected type, no duplicate series, histograms cumulative and consistent."""
    assert text.endswith("\n")
    families = list(text_string_to_metric_families(text))
    assert {family.name: family.type for family in families} == FAMILY_TYPES
    declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    samples: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in families:
        series = samples.setdefault(family.name, {})
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in series, f"duplicate series {key}"
            series[key] = sample.value
            assert sample.value >= 0 and not math.isnan(sample.value)
    sample_lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert sum(len(series) for series in samples.values()) == len(sample_lines)
    for line in sample_lines:
        name = line.split("{")[0].split(" ")[0]
        assert any(name == base or name.startswith(base + "_") for base in declared), line
    histogram = samples["forkserve_request_duration_seconds"]
    buckets = [(float(dict(labels)["le"]), value) for (name, labels), value in histogram.items()
               if name.endswith("_bucket")]
    assert [bound for bound, _ in buckets] == [*DURATION_BUCKETS, math.inf]
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)
    assert histogram[("forkserve_request_duration_seconds_count", ())] == counts[-1]
    return samples


def value(samples, family: str, suffix: str = "", **labels: str) -> float:
    return samples[family][(family + suffix, tuple(sorted(labels.items())))]


def scrape(address: str):
    status, body = get(address, "/metrics")
    assert status == 200
    return parse_strictly(body.decode())


def test_render_escapes_label_values_and_parses():
    snap = Snapshot(
        master_pid=1, now=100.0, uptime=5.5, target_workers=1,
        workers=[WorkerStats(0, 42, "idle", 3, None, None, 1000, 1.0, 0.1, "crash")],
        totals=Counters(3, [0, 2, 0, 1, 0, 0], [1, 2] + [0] * 12, 0.25, 999),
        restarts={"max_requests": 0, "memory": 0, "lifetime": 0, "timeout": 0, "crash": 1, "custom": 2},
        listeners=[ListenerStats('unix:/tmp/we"ird\\path\n', QueueDepth(1, 5)), ListenerStats("x", None)],
        draining=False, stopping=False, loop_age=0.0, fully_booted=True,
        states={"booting": 0, "idle": 1, "busy": 0, "stopping": 0},
    )
    samples = parse_strictly(render_prometheus(snap))
    assert value(samples, "forkserve_requests", "_total", status_class="2xx") == 2
    assert value(samples, "forkserve_request_duration_seconds", "_bucket", le="0.005") == 3
    assert value(samples, "forkserve_worker_restarts", "_total", reason="custom") == 2
    assert value(samples, "forkserve_worker_rss_bytes", pid="42", slot="0") == 1000
    weird = 'unix:/tmp/we"ird\\path\n'
    assert value(samples, "forkserve_listen_queue_depth", listener=weird) == 1
    assert value(samples, "forkserve_listen_queue_limit", listener=weird) == 5
    assert len(samples["forkserve_listen_queue_depth"]) == 1  # unknown depth: no sample rather than a lie


def test_scoreboard_totals_survive_released_slots():
    board = Scoreboard(4)
    for index, status in ((0, 200), (1, 503)):
        board.claim(index, 100 + index)
        writer = board.writer(index)
        writer.ready(10.0)
        writer.busy(10.0, b"GET /x")
        assert board.read(index).request_line == "GET /x"
        writer.idle(10.3, 10.0, status, 120)
        assert board.read(index).state == State.IDLE
    board.release(0)
    totals = board.totals()
    assert totals.requests == 2 and totals.by_status_class["2xx"] == 1 and totals.by_status_class["5xx"] == 1
    assert totals.bytes_out == 240 and totals.buckets[DURATION_BUCKETS.index(0.5)] == 2
    assert totals.duration_sum == pytest.approx(0.6)


def test_metrics_count_what_was_served_across_recycling_and_crashes(start_server):
    stats = f"127.0.0.1:{free_port()}"
    server = start_server("-w", "2", "--max-requests", "5", "--stats-bind", stats, "demo.wsgi:application")
    workers = server.wait_workers(2)

    def settled():
        samples = scrape(stats)
        queue = sum(samples["forkserve_listen_queue_depth"].values())
        idle = value(samples, "forkserve_workers", state="idle")
        return samples if queue == 0 and idle == 2 else None

    before = wait_for(settled, 15, interval=0.1, message="an idle server")
    sent = Tally()
    plan = [("/hello", "2xx")] * 7 + [("/no/such/page", "4xx")] * 3 + [("/error", "5xx")] * 2 + [
        ("/crash", "5xx"), ("/redirect", "3xx"), ("/sleep?seconds=0.3", "2xx")]
    for path, status_class in plan:
        reply = requests.get(server.url + path, timeout=10, allow_redirects=False)
        assert f"{reply.status_code // 100}xx" == status_class, path
        sent[status_class] += 1

    def delta(samples, family, suffix="", **labels):
        return value(samples, family, suffix, **labels) - value(before, family, suffix, **labels)

    def counted():
        samples = scrape(stats)
        by_class = {name: delta(samples, "forkserve_requests", "_total", status_class=name)
                    for name in ("1xx", "2xx", "3xx", "4xx", "5xx", "other")}
        return samples if by_class == {name: sent.get(name, 0) for name in by_class} else None

    samples = wait_for(counted, 15, interval=0.1, message="request counters to match what was sent")
    total = sum(sent.values())
    assert delta(samples, "forkserve_request_duration_seconds", "_count") == total
    slow_bucket = delta(samples, "forkserve_request_duration_seconds", "_bucket", le="0.25")
    assert slow_bucket <= total - 1  # the 0.3 s sleep is above 0.25 ...
    assert delta(samples, "forkserve_request_duration_seconds", "_sum") >= 0.3  # ... and in the sum
    assert delta(samples, "forkserve_response_bytes", "_total") > 0
    # 15+ requests over 2 workers with max_requests 5: some were recycled, and counted as such
    assert value(samples, "forkserve_worker_restarts", "_total", reason="max_requests") >= 1
    assert value(samples, "forkserve_worker_restarts", "_total", reason="crash") == 0

    victim = server.wait_workers(2)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: value(scrape(stats), "forkserve_worker_restarts", "_total", reason="crash") == 1, 10,
             message="the crash to be counted")
    samples = wait_for(lambda: (s := scrape(stats)) and value(s, "forkserve_workers", state="idle") == 2 and s,
                       10, message="a replacement worker")
    live = {int(dict(labels)["pid"]) for _, labels in samples["forkserve_worker_rss_bytes"]}
    assert len(live) == 2 and victim not in live and set(workers) != live
    assert all(rss > 1_000_000 for rss in samples["forkserve_worker_rss_bytes"].values())
    assert value(samples, "forkserve_workers_target") == 2 and value(samples, "forkserve_ready") == 1
    assert value(samples, "forkserve_uptime_seconds") > 0
    assert value(samples, "forkserve_listen_queue_limit", listener=server.url) == 2048
    # the killed worker's counters stay in the totals
    assert delta(samples, "forkserve_requests", "_total", status_class="2xx") == sent["2xx"]
    _, body = get(stats, "/stats")
    document = json.loads(body)
    reasons = {worker["pid"]: worker["last_restart_reason"] for worker in document["workers"]}
    assert "crash" in reasons.values()


def test_liveness_and_readiness_rules():
    base = Snapshot(
        master_pid=1, now=0.0, uptime=1.0, target_workers=2,
        workers=[WorkerStats(0, 5, "idle", 0, None, None, None, 1.0, 0.0, None)] * 2,
        totals=Counters(), restarts={}, listeners=[], draining=False, stopping=False, loop_age=0.5,
        fully_booted=True, states={"booting": 0, "idle": 2, "busy": 0, "stopping": 0},
    )

    def snap(**changes):
        return dataclasses.replace(base, **changes)

    assert snap().liveness()[0] and snap().readiness() == (True, "2 worker(s) ready")
    assert snap(draining=True).readiness() == (False, "draining")  # shutdown_delay sets this
    assert snap(stopping=True).readiness() == (False, "shutting down")
    assert snap(stopping=True).liveness()[0]  # shutting down is not dead
    booting = snap(fully_booted=False, states={"booting": 1, "idle": 1, "busy": 0, "stopping": 0})
    assert booting.readiness() == (False, "1 of 2 workers booted")
    assert not snap(states={"booting": 2, "idle": 0, "busy": 0, "stopping": 0}).readiness()[0]
    assert snap(loop_age=60.0).liveness() == (False, "master loop has not turned for 60.0s")
    assert snap(workers=[]).liveness() == (False, "no worker processes")


def test_restart_reasons_are_counted_and_shown_on_the_replacement():
    telemetry = Telemetry()
    telemetry.worker_spawned(0)  # a first start replaces nobody
    telemetry.record_restart("max_requests (500 served)")
    telemetry.record_restart("max_worker_memory (312.4 MB)")
    telemetry.record_restart("timeout")
    telemetry.worker_spawned(3)
    telemetry.worker_spawned(1)
    assert telemetry.restarts == {"max_requests": 1, "memory": 1, "lifetime": 0, "timeout": 1, "crash": 0}
    assert telemetry.last_restart_by_slot == {0: None, 3: "max_requests (500 served)",
                                              1: "max_worker_memory (312.4 MB)"}
    assert restart_reason_key("max_worker_lifetime, 3600s old") == "lifetime"
    assert restart_reason_key("crash") == "crash" and restart_reason_key("reload (HUP)") == "reload"
