"""StatsD: gunicorn's names and types, received by a real UDP (and unix datagram) listener."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter

import pytest
import requests
from conftest import free_port, wait_for

from forkserve.process.statsd import StatsdClient, normalize_prefix

LINE = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+):(?P<value>-?[0-9.]+)\|(?P<kind>c|g|ms|h)(\|@1\.0)?(\|#(?P<tags>\S+))?$")


class Listener:
    """A StatsD server stand-in: receives datagrams and parses every line, refusing malformed ones."""

    def __init__(self, family: int, address: object) -> None:
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.lines: list[dict[str, str]] = []
        self.malformed: list[str] = []
        self.running = True
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while self.running:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.decode("ascii").split("\n"):
                match = LINE.match(line)
                if match is None:
                    self.malformed.append(line)
                else:
                    self.lines.append(match.groupdict())

    def count(self, name: str, kind: str = "c") -> float:
        return sum(float(line["value"]) for line in list(self.lines) if line["name"] == name and line["kind"] == kind)

    def seen(self, name: str, kind: str) -> list[float]:
        return [float(line["value"]) for line in list(self.lines) if line["name"] == name and line["kind"] == kind]

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def udp_listener():
    listener = Listener(socket.AF_INET, ("127.0.0.1", 0))
    yield listener
    listener.close()


def test_lines_follow_gunicorns_format():
    assert normalize_prefix("app") == normalize_prefix("app.") == normalize_prefix("app..") == "app."
    assert normalize_prefix("") == ""
    client = StatsdClient("127.0.0.1:9", "shop", "env:prod,team:web")
    assert client.counter("gunicorn.requests") == "shop.gunicorn.requests:1|c|@1.0|#env:prod,team:web"
    assert client.timer("gunicorn.request.duration", 12.5) == "shop.gunicorn.request.duration:12.5|ms|#env:prod,team:web"
    assert StatsdClient("127.0.0.1:9").gauge("gunicorn.workers", 4) == "gunicorn.workers:4|g"


def test_sending_to_nobody_never_raises_and_complains_once(caplog):
    port = free_port()  # nothing listens there: the kernel answers with ICMP port unreachable
    client = StatsdClient(f"127.0.0.1:{port}")
    started = time.monotonic()
    with caplog.at_level("INFO", logger="forkserve.error"):
        for _ in range(200):
            client.send([client.counter("gunicorn.requests")])
    assert time.monotonic() - started < 1.0
    assert client.dropped > 0
    assert len([record for record in caplog.records if "statsd: cannot send" in record.message]) == 1
    unresolvable = StatsdClient("no-such-host.invalid:8125")
    unresolvable.send(["x:1|c"])  # no exception, one complaint
    assert unresolvable.dropped == 1


@pytest.mark.parametrize("transport", ["udp", "unix"])
def test_request_metrics_match_the_requests_sent(start_server, tmp_path, transport):
    if transport == "udp":
        listener = Listener(socket.AF_INET, ("127.0.0.1", 0))
        host = f"127.0.0.1:{listener.sock.getsockname()[1]}"
    else:
        path = str(tmp_path / "statsd.sock")
        listener = Listener(socket.AF_UNIX, path)
        host = f"unix:{path}"
    try:
        server = start_server("-w", "2", "--threads", "2", "--statsd-host", host, "--statsd-prefix", "shop",
                              "--dogstatsd-tags", "env:test", "ops_apps:queue_echo")
        sent = Counter()
        with requests.Session() as session:
            for number in range(60):
                path = ("/", "/missing", "/fail")[number % 3 if number < 9 else 0]
                status = session.get(server.url + path, timeout=5).status_code
                sent[status] += 1
        total = sum(sent.values()) + 1  # + the fixture's readiness probe
        wait_for(lambda: listener.count("shop.gunicorn.requests") >= total, 5, message="every request counted")
        wait_for(lambda: listener.seen("shop.gunicorn.workers", "g"), 5, message="the workers gauge")
        time.sleep(0.3)
        assert listener.malformed == []
        assert listener.count("shop.gunicorn.requests") == total
        assert listener.count("shop.gunicorn.request.status.200") == sent[200] + 1
        assert listener.count("shop.gunicorn.request.status.404") == sent[404] == 3
        assert listener.count("shop.gunicorn.request.status.500") == sent[500] == 3
        assert len(listener.seen("shop.gunicorn.request.duration", "ms")) == total
        assert len(listener.seen("shop.forkserve.request.queue_time", "ms")) == total
        assert listener.seen("shop.gunicorn.workers", "g")[-1] == 2
        assert listener.seen("shop.forkserve.workers.target", "g")[-1] == 2
        assert listener.count("shop.gunicorn.log.error") == 3  # "error handling GET /fail", in a worker
        assert listener.count("shop.gunicorn.log.exception") == 3
        assert all(line["tags"] == "env:test" for line in listener.lines)
    finally:
        listener.close()


def test_a_dead_statsd_costs_nothing_but_a_log_line(start_server):
    server = start_server("-w", "1", "--statsd-host", f"127.0.0.1:{free_port()}", "ops_apps:queue_echo")
    with requests.Session() as session:
        statuses = [session.get(server.url + "/", timeout=5).status_code for _ in range(100)]
    assert statuses == [200] * 100
    wait_for(lambda: "statsd: cannot send" in server.log(), 5, message="the complaint")
    time.sleep(1.2)  # the master's gauges fail too, once a second
    complaints = server.log().count("statsd: cannot send")
    assert 1 <= complaints <= 2  # one per process (worker, master) and minute at most
