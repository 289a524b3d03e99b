"""The adaptive worker count's decisions, driven with a real scoreboard and a stand-in master."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from forkserve.master.adaptive import Adaptive
from forkserve.master.load import Load, measure
from forkserve.process.budget import Budget
from forkserve.process.scoreboard import Scoreboard
from forkserve.stats.metrics import Telemetry, render_prometheus, snapshot, stats_json


class FakeBudget(Budget):
    def __init__(self) -> None:
        self.why: str | None = None

    def refusal(self, worker_rss: int) -> str | None:
        return self.why


class FakeMaster:
    """What the adaptive count reads and calls on the arbiter."""

    def __init__(self, workers: int = 1, max_workers: int = 3) -> None:
        self.config = SimpleNamespace(workers=workers, max_workers=max_workers, scale_up_queue_time=0.2,
                                      scale_down_after=5.0)
        self.scoreboard = Scoreboard(16)
        self.telemetry = Telemetry()
        self.target_workers = workers
        self.paused = False
        self.stopping = None
        self.reload = SimpleNamespace(state=None)
        self.upgrade = SimpleNamespace(in_progress=False)
        self.retired: list[int] = []
        self.records = [SimpleNamespace(pid=0, ready_at=1.0, slot=index) for index in range(workers)]
        self.fleet = SimpleNamespace(serving=lambda: self.records, retire_extra=self.retired.append)

    def set_target(self, count: int) -> None:
        self.target_workers = count
        self.records = self.records[:count] + [SimpleNamespace(pid=0, ready_at=1.0, slot=index)
                                               for index in range(len(self.records), count)]

    def waited(self, seconds: float, count: int = 1) -> None:
        """``count`` requests begun that waited ``seconds`` (counted in slot 15's histogram)."""
        writer = self.scoreboard.writer(15)
        for _ in range(count):
            writer.idle(1.0, 1.0, 200, 0, seconds)


BUSY = Load(workers=1, busy=1, idle=0)
QUIET = Load(workers=3, busy=0, idle=3)


def adaptive_for(master: FakeMaster) -> tuple[Adaptive, FakeBudget]:
    budget = FakeBudget()
    adaptive = Adaptive(master, budget)
    adaptive.configure(master.config)
    adaptive.decide(Load(), 0.0)  # the first look only reads the counters
    return adaptive, budget


def test_grows_one_at_a_time_on_late_requests_up_to_max_workers(caplog):
    master = FakeMaster(workers=1, max_workers=3)
    adaptive, _ = adaptive_for(master)
    adaptive.decide(BUSY, 1.0)
    assert master.target_workers == 1  # busy, but nobody waited
    master.waited(0.1, 5)
    adaptive.decide(BUSY, 2.0)
    assert master.target_workers == 1  # under the threshold (0.2, read as the 0.25 bucket bound)
    with caplog.at_level(logging.INFO, logger="forkserve.error"):
        master.waited(0.4, 3)
        adaptive.decide(BUSY, 3.0)
    assert master.target_workers == 2
    assert "adaptive: 1 -> 2 workers (up): every worker busy and 3 request(s) waited over 0.25s" in caplog.text
    master.records[-1].ready_at = None  # the new worker is still booting: no second step yet
    master.waited(0.4)
    adaptive.decide(Load(workers=2, busy=2), 4.0)
    assert master.target_workers == 2
    master.records[-1].ready_at = 4.5
    for second in (5.0, 6.0, 7.0):
        master.waited(0.4)
        adaptive.decide(Load(workers=master.target_workers, busy=master.target_workers), second)
    assert master.target_workers == 3  # max_workers
    assert master.telemetry.scaling["changes"] == {"up": 2, "down": 0}
    assert master.telemetry.scaling["last_change"].startswith("2 -> 3: every worker busy")


def test_queueing_for_the_threshold_grows_too():
    master = FakeMaster(workers=2, max_workers=4)
    adaptive, _ = adaptive_for(master)
    waiting = Load(workers=2, busy=2, waiting=3)
    adaptive.decide(waiting, 1.0)
    assert master.target_workers == 2  # queued since now only
    adaptive.decide(waiting, 1.3)
    assert master.target_workers == 3


def test_not_when_a_worker_has_a_free_thread_or_while_reloading():
    master = FakeMaster(workers=1, max_workers=3)
    adaptive, _ = adaptive_for(master)
    master.waited(1.0)
    adaptive.decide(Load(workers=1, busy=0, idle=0), 1.0)  # some threads free
    master.reload.state = object()
    master.waited(1.0)
    adaptive.decide(BUSY, 2.0)
    assert master.target_workers == 1


def test_the_budget_holds_it_and_says_so_once(caplog):
    master = FakeMaster(workers=1, max_workers=3)
    adaptive, budget = adaptive_for(master)
    budget.why = "the cgroup's memory budget is used up (900 MB of 1000 MB, a worker needs about 80 MB)"
    with caplog.at_level(logging.WARNING, logger="forkserve.error"):
        for second in (1.0, 2.0, 3.0):
            master.waited(1.0)
            adaptive.decide(BUSY, second)
    assert master.target_workers == 1
    assert caplog.text.count("adaptive: not growing past 1 workers: the cgroup's memory budget") == 1
    assert master.telemetry.scaling["last_change"].startswith("held at 1: the cgroup's memory")


def test_shrinks_after_a_quiet_period_idle_workers_first_never_below_workers(caplog):
    master = FakeMaster(workers=1, max_workers=3)
    master.set_target(3)
    adaptive, _ = adaptive_for(master)
    adaptive.decide(QUIET, 10.0)
    adaptive.decide(Load(workers=3, busy=1, idle=2), 13.0)
    assert master.target_workers == 3
    with caplog.at_level(logging.INFO, logger="forkserve.error"):
        adaptive.decide(QUIET, 15.0)
    assert master.target_workers == 2 and master.retired == [2]
    assert "adaptive: 3 -> 2 workers (down): at least one worker idle and nothing queued for 5s" in caplog.text
    adaptive.decide(Load(workers=2, busy=2, idle=0), 16.0)  # busy again: the quiet period starts over
    adaptive.decide(QUIET, 17.0)
    adaptive.decide(QUIET, 21.0)
    assert master.target_workers == 2
    adaptive.decide(QUIET, 22.0)
    assert master.target_workers == 1
    adaptive.decide(QUIET, 40.0)
    assert master.target_workers == 1 and master.retired == [2, 1]


def test_off_without_max_workers():
    master = FakeMaster(workers=2, max_workers=0)
    adaptive, _ = adaptive_for(master)
    master.waited(5.0, 10)
    adaptive.decide(Load(workers=2, busy=2, waiting=5), 1.0)
    assert master.target_workers == 2 and master.telemetry.scaling is None


def test_measure_counts_a_worker_busy_only_when_every_thread_is():
    board = Scoreboard(8)
    board.claim(0, 10)
    for slot, thread in ((1, 1), (2, 2)):
        board.claim(slot, 10, owner=0, thread=thread)
    for slot in (0, 1, 2):
        board.writer(slot).ready(1.0)
    board.writer(0).connections(0, 0, 3, 0)  # three requests in the app or waiting for it
    board.writer(1).begin(1.0, b"GET /a")
    load = measure(board, [(0, [1, 2])], [])
    assert (load.workers, load.busy, load.idle, load.waiting) == (1, 0, 0, 2)
    board.writer(2).begin(1.0, b"GET /b")
    load = measure(board, [(0, [1, 2])], [])
    assert (load.busy, load.waiting, load.all_busy) == (1, 1, True)


def test_measure_finds_nothing_waiting_in_an_idle_sync_worker():
    """A sync worker publishes its connection counts as a request enters the app (and twice a
    second): back to idle, its last "in the app" count lingers. It must not read as a request
    waiting — that kept a fleet whose light load spread over every worker from ever shrinking."""
    board = Scoreboard(4)
    board.claim(0, 10)
    writer = board.writer(0)
    writer.ready(1.0)
    writer.connections(0, 0, 1, 0)  # published as its last request entered the app
    assert measure(board, [(0, [])], []).waiting == 0
    writer.begin(2.0, b"GET /a")
    writer.connections(0, 0, 3, 0)  # in the app, two more ready behind it
    assert measure(board, [(0, [])], []).waiting == 2


@pytest.mark.parametrize("threshold", [0.05, 0.2, 1.0])
def test_the_threshold_reads_as_a_histogram_bound(threshold):
    master = FakeMaster()
    master.config.scale_up_queue_time = threshold
    adaptive, _ = adaptive_for(master)
    assert adaptive.bound >= threshold


def test_stats_and_metrics_show_the_adaptive_fleet():
    master = FakeMaster(workers=1, max_workers=3)
    adaptive, _ = adaptive_for(master)
    master.waited(1.0)
    adaptive.decide(BUSY, 1.0)
    master.listeners, master.pid = [], 1
    snap = snapshot(master)
    document = stats_json(snap)["adaptive"]
    assert document["min_workers"] == 1 and document["max_workers"] == 3
    assert document["changes"] == {"up": 1, "down": 0} and document["last_change"].startswith("1 -> 2: ")
    families = {family.name: family for family in text_string_to_metric_families(render_prometheus(snap))}
    assert {sample.labels["direction"]: sample.value for sample in families["forkserve_worker_scaling"].samples} \
        == {"up": 1.0, "down": 0.0}
    assert families["forkserve_workers_max"].samples[0].value == 3
