"""The master's loop driven without real signals: signals are queued by hand and handled with
``handle_signals()``; the fleet's workers are either fake records (no fork) or real trivial children."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time

import pytest
from conftest import wait_for

from forkserve.master.arbiter import Arbiter
from forkserve.master.fleet import Fleet, WorkerRecord
from forkserve.master.watchdog import RespawnBackoff
from forkserve.process.logs import access_log, error_log
from forkserve.process.scoreboard import State
from forkserve.settings.resolve import resolve


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def log_lines():
    """The error log's messages; the loggers are restored afterwards (HUP reconfigures them)."""
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate) for logger in (error_log, access_log)]
    handler = Lines()
    error_log.addHandler(handler)
    error_log.setLevel(logging.INFO)
    yield handler
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


class FakeFleet(Fleet):
    """Spawning records a worker that is ready at once (unless ``boot_instantly`` is False);
    signals to workers are recorded."""

    boot_instantly = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[int, int]] = []
        self.pids = iter(range(900_000, 999_999))

    def spawn_worker(self) -> WorkerRecord:
        assert self.scoreboard is not None
        pid = next(self.pids)
        index = self.scoreboard.free_slot()
        self.scoreboard.claim(index, pid)
        if self.boot_instantly:
            self.scoreboard.writer(index).ready(time.time())
        record = WorkerRecord(pid=pid, slot=index, spawned_at=time.monotonic(), generation=self.server.generation)
        self.workers[pid] = record
        return record

    def kill(self, pid: int, signum: int) -> None:
        self.sent.append((pid, signum))


class FakeWorkers(Arbiter):
    """An arbiter whose fleet is a FakeFleet."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fleet = FakeFleet(self)

    def feed(self, *signums: int) -> None:
        self.events.signals.extend(signums)
        self.handle_signals()
        self.manage()


@pytest.fixture
def fake(tmp_path, monkeypatch, log_lines) -> FakeWorkers:
    monkeypatch.chdir(tmp_path)
    arbiter = FakeWorkers(resolve(["-w", "2", "--log-level", "info", "simple_apps:hello"], {}))
    arbiter.prepare()
    arbiter.spawn_missing()
    return arbiter


def terms(arbiter: FakeWorkers) -> list[int]:
    return [pid for pid, signum in arbiter.fleet.sent if signum == signal.SIGTERM]


def test_ttin_adds_and_ttou_stops_the_oldest_idle_worker(fake):
    first, second = sorted(fake.workers)
    fake.feed(signal.SIGTTIN)
    assert fake.target_workers == 3 and len(fake.workers) == 3
    assert fake.scoreboard is not None
    fake.scoreboard.writer(fake.workers[first].slot).busy(time.time(), b"GET /slow")
    fake.feed(signal.SIGTTOU)
    assert terms(fake) == [second]  # the oldest *idle* one, not the busy first
    fake.feed(signal.SIGTTOU, signal.SIGTTOU)
    assert fake.target_workers == 1 and len(terms(fake)) == 2
    assert len(fake.fleet.serving()) == 1


def test_winch_parks_workers_and_hup_brings_a_new_generation(fake, log_lines):
    old = set(fake.workers)
    fake.feed(signal.SIGWINCH)
    assert set(terms(fake)) == old and fake.paused
    fake.manage()
    assert set(fake.workers) == old  # no respawn while parked
    fake.feed(signal.SIGHUP)
    assert not fake.paused and fake.reload.state is not None
    error_log.addHandler(log_lines)  # the reload set the logs up afresh from the configuration
    fake.manage()  # the new workers report ready; the reload completes
    new = set(fake.workers) - old
    assert len(new) == 2 and fake.reload.state is None
    assert all(fake.workers[pid].generation == fake.generation for pid in new)
    assert "reload complete: 2 workers" in log_lines.text()


def test_new_worker_killed_as_stuck_while_booting_abandons_the_reload(fake, log_lines, capsys):
    old, generation = set(fake.workers), fake.generation
    fake.fleet.boot_instantly = False
    fake.feed(signal.SIGHUP)
    error_log.addHandler(log_lines)
    fake.manage()
    new = [record for record in fake.workers.values() if record.pid not in old]
    assert len(new) == 2 and fake.reload.state is not None
    stuck = new[0]
    stuck.abort_sent_at = time.monotonic()  # as the stall check does, then SIGKILL
    del fake.workers[stuck.pid]
    fake._worker_exited(stuck, signal.SIGKILL)  # wait status of a SIGKILLed child
    assert fake.reload.state is None and fake.generation == generation
    assert (new[1].pid, signal.SIGTERM) in fake.fleet.sent  # the other new worker is stopped
    assert not any(pid in old for pid, _ in fake.fleet.sent)  # the old ones keep serving
    # (going back to the old configuration set its logging up again: stderr here)
    assert "a new worker ended before it was ready (SIGKILL)" in capsys.readouterr().err


def test_term_is_graceful_int_and_quit_are_fast(fake):
    fake.events.signals.append(signal.SIGTERM)
    fake.handle_signals()
    assert fake.stopping == "graceful"
    for signum in (signal.SIGINT, signal.SIGQUIT):
        fake.stopping = None
        fake.events.signals.append(signum)
        fake.handle_signals()
        assert fake.stopping == "fast"


def test_lifetime_and_retirement_replace_before_stopping(fake):
    victim = min(fake.workers)
    fake.workers[victim].lifetime = 0.0
    fake.manage()  # due: its replacement is forked first; the victim keeps serving meanwhile
    assert len(fake.workers) == 3 and terms(fake) == []
    fake.manage()  # the replacement is seen ready: now the victim is stopped
    assert terms(fake) == [victim]


class ForkingFleet(Fleet):
    """Real children that just sleep (or exit with ``child_exit_code`` at once)."""

    child_exit_code: int | None = None

    def spawn_worker(self) -> WorkerRecord:
        assert self.scoreboard is not None
        index = self.scoreboard.free_slot()
        self.scoreboard.claim(index, 0)
        pid = os.fork()
        if pid == 0:
            if self.child_exit_code is not None:
                os._exit(self.child_exit_code)
            try:
                time.sleep(30)
            finally:
                os._exit(0)  # never back into pytest
        self.scoreboard.set_pid(index, pid)
        record = WorkerRecord(pid=pid, slot=index, spawned_at=time.monotonic(), generation=self.server.generation)
        self.workers[pid] = record
        return record


@pytest.fixture
def forking(tmp_path, monkeypatch, log_lines):
    monkeypatch.chdir(tmp_path)
    arbiter = Arbiter(resolve(["-w", "2", "simple_apps:hello"], {}))
    arbiter.fleet = ForkingFleet(arbiter)
    arbiter.prepare()
    yield arbiter
    for pid in list(arbiter.workers):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0] == "Z"


def test_chld_reaps_a_killed_worker_and_respawns(forking, log_lines):
    forking.fleet.backoff = RespawnBackoff(instant=0.0)  # a quick death is not a crash loop here
    forking.spawn_missing()
    victim = min(forking.workers)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: zombie(victim), 5, message="the child to die")
    forking.events.signals.append(signal.SIGCHLD)
    forking.handle_signals()
    forking.reap()
    assert victim not in forking.workers
    assert f"worker {victim} was killed by SIGKILL" in log_lines.text()
    forking.manage()
    assert len(forking.workers) == 2


def test_boot_failure_stops_the_master_only_at_first_start(forking, log_lines):
    forking.fleet.child_exit_code = 3
    forking.spawn_missing()
    wait_for(lambda: all(zombie(pid) for pid in forking.workers), 5, message="children to exit")
    forking.reap()
    assert forking.stopping == "fast" and forking.exit_code == 3

    forking.stopping, forking.exit_code, forking.fleet.ever_ready = None, 0, True  # later in life
    forking.spawn_missing()
    wait_for(lambda: all(zombie(pid) for pid in forking.workers), 5, message="children to exit")
    forking.reap()
    assert forking.stopping is None and forking.fleet.backoff.failures == 2
    assert "waiting 0.50s before the next" in log_lines.text()
    assert forking.scoreboard is not None and all(
        view.state == State.EMPTY for view in map(forking.scoreboard.read, range(4))
    )
