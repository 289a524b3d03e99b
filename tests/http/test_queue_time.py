"""Queue time: a trusted proxy's X-Request-Start, forkserve's own wait, and max_queue_time shedding."""

from __future__ import annotations

import json
import time

import pytest
import requests
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families

from forkserve.http.connection import proxy_wait
from forkserve.stats.top import fetch_stats, get

NOW = 1_700_000_000.0


def sample(address: str, name: str, **labels: str) -> float:
    """One sample of the stats endpoint's /metrics."""
    text = get(address, "/metrics")[1].decode()
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and item.labels == labels:
                return item.value
    raise AssertionError(f"no sample {name} {labels}")


@pytest.mark.parametrize(("header", "expected"), [
    (f"t={NOW - 0.5:.3f}", 0.5),  # nginx: t=${msec}
    (f"t={int((NOW - 0.25) * 1000)}", 0.25),  # milliseconds (Heroku)
    (f"t={int((NOW - 0.125) * 1_000_000)}", 0.125),  # microseconds (Apache's %t, New Relic)
    (f"{int((NOW - 2) * 1e9)}", 2.0),  # nanoseconds, without t=
    (f" t={NOW - 1:.0f} ", 1.0),
])
def test_proxy_wait_reads_every_unit(header, expected):
    assert proxy_wait(header, NOW) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("header", ["", "garbage", "t=", "t=12", f"t={NOW + 60}", f"t={NOW - 200_000}"])
def test_proxy_wait_ignores_what_is_not_a_stamp(header):
    assert proxy_wait(header, NOW) is None


def test_trusted_stamp_counts_untrusted_is_ignored_and_late_requests_are_shed(start_server, tmp_path):
    calls = tmp_path / "calls"
    access = tmp_path / "access.log"
    stats = f"127.0.0.1:{free_port()}"
    server = start_server("-w", "1", "--max-queue-time", "2", "--stats-bind", stats,
                          "--access-logfile", str(access), "--access-logformat", "%(U)s %(s)s %(Q)s",
                          "ops_apps:queue_echo", env={"OPS_CALLS_FILE": str(calls)})
    plain = requests.get(server.url + "/plain", timeout=5).json()
    assert plain["proxy_queue_time"] is None and 0 <= plain["queue_time"] < 0.5
    stamp = {"X-Request-Start": f"t={int((time.time() - 0.75) * 1000)}"}
    proxied = requests.get(server.url + "/proxied", headers=stamp, timeout=5).json()
    assert 0.75 <= proxied["proxy_queue_time"] < 1.5
    assert proxied["queue_time"] == proxied["proxy_queue_time"]  # the larger of the two waits

    late = requests.get(server.url + "/late", headers={"X-Request-Start": f"t={time.time() - 5:.3f}"}, timeout=5)
    assert late.status_code == 503
    assert late.headers["Retry-After"] == "2" and late.headers["Connection"] == "close"
    # (the first "/" is the fixture's readiness probe) the shed request never reached the app
    assert calls.read_text().split() == ["/", "/plain", "/proxied"]

    assert sample(stats, "forkserve_requests_shed_total") == 1
    assert sample(stats, "forkserve_requests_total", status_class="5xx") == 1
    assert sample(stats, "forkserve_request_queue_seconds_bucket", le="2.5") == 3
    document = fetch_stats(stats)
    assert document["totals"]["shed"] == 1
    assert document["workers"][0]["queue_time_worst"] >= 5.0  # the shed request's wait, this window
    lines = [line.split() for line in access.read_text().splitlines()][1:]
    assert [(path, status) for path, status, _ in lines] == [("/plain", "200"), ("/proxied", "200"),
                                                            ("/late", "503")]
    assert int(lines[1][2]) >= 750_000 and int(lines[2][2]) >= 5_000_000


def test_a_stamp_from_an_untrusted_peer_is_ignored(start_server):
    server = start_server("-w", "1", "--max-queue-time", "1", "--forwarded-allow-ips", "10.9.9.9",
                          "ops_apps:queue_echo")
    reply = requests.get(server.url + "/", headers={"X-Request-Start": f"t={time.time() - 30:.3f}"}, timeout=5)
    assert reply.status_code == 200
    document = json.loads(reply.text)
    assert document["proxy_queue_time"] is None and document["queue_time"] < 0.5
