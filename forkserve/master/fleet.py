"""The worker fleet: forking workers, hearing from them, timing them out, recycling and stopping them.

The fleet owns the worker records, the shared scoreboard, the control channel on which workers
speak to the master (boot failures, "ready", "replace me"), and the respawn backoff. It carries
out; the arbiter decides: how many workers to keep, when to spawn, what an exit means for a
reload or for the whole server.

Workers belong to a *generation* (the master's, at fork): a HUP makes a new one, and only the
workers of the current generation that are not being replaced count toward the target.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from forkserve.master import stacks
from forkserve.master.watchdog import Overdue, RespawnBackoff, overdue, same_episode, stall_limit
from forkserve.process.exits import EXIT_BOOT_FAILED, describe_status
from forkserve.process.hooks import call_hook
from forkserve.process.logs import error_log
from forkserve.process.scoreboard import Scoreboard, State
from forkserve.process.sockets import Listener
from forkserve.process.stackdump import TIMEOUT_SIGNAL
from forkserve.settings.registry import Config
from forkserve.stats.metrics import Telemetry
from forkserve.worker.recycling import lifetime_limit, lifetime_notice
from forkserve.worker.worker import Worker, signals_held

TIMEOUT_KILL_GRACE = 2.0  # after the stack-dump signal, before SIGKILL


@dataclass
class WorkerRecord:
    """The master's view of one worker process."""

    pid: int
    slot: int
    spawned_at: float
    generation: int = 0
    lifetime: float = float("inf")
    ready_at: float | None = None
    stop_sent_at: float | None = None
    abort_sent_at: float | None = None
    kill_sent: bool = False
    retiring: str | None = None  # why it is being replaced (recycling)
    exiting: bool = False  # it announced it exits by itself
    thread_slots: list[int] = field(default_factory=list)  # its app threads' slots (threads > 1)
    # thread slot -> (the timed-out request's start, when the timeout signal was sent)
    thread_aborts: dict[int, tuple[float, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def serving(self) -> bool:
        """Counts toward the worker target: not being stopped, not waiting for a replacement."""
        return self.stop_sent_at is None and self.retiring is None

    @property
    def expected_exit(self) -> bool:
        return self.stop_sent_at is not None or self.abort_sent_at is not None or self.exiting


class Master(Protocol):
    """What the fleet reads from its master (the Arbiter): the ``server`` hooks and workers see."""

    config: Config
    app: Callable[..., Any] | None
    listeners: list[Listener]
    generation: int
    telemetry: Telemetry

    def close_in_child(self) -> None:
        """In a freshly forked worker: close what only the master may hold."""


class Fleet:
    """The worker processes of one master."""

    def __init__(self, server: Master) -> None:
        self.server = server
        self.workers: dict[int, WorkerRecord] = {}
        self.scoreboard: Scoreboard | None = None
        self.backoff = RespawnBackoff()
        self.boot_failures: dict[int, str] = {}
        self.ever_ready = False

    def open(self, slots: int) -> None:
        """The shared scoreboard and the control channel, before the first fork."""
        self.scoreboard = Scoreboard(slots)
        self.control_read, self.control_write = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.control_read.setblocking(False)

    def serving(self) -> list[WorkerRecord]:
        """Workers of the current generation that count toward the target."""
        generation = self.server.generation
        return [record for record in self.workers.values()
                if record.serving and record.generation == generation]

    # -- spawn ---------------------------------------------------------------------------------

    def spawn_up_to(self, target: int) -> None:
        """Fork workers until ``target`` serve (stops at a failed fork: it backs off)."""
        for _ in range(target - len(self.serving())):
            if self.spawn_worker() is None:
                return

    def spawn_worker(self) -> WorkerRecord | None:
        """Fork one worker into a free scoreboard slot (None if fork failed; it backs off)."""
        assert self.scoreboard is not None
        server, config = self.server, self.server.config
        index = self.scoreboard.free_slot()
        self.scoreboard.claim(index, 0)
        thread_slots = []
        if config.threads > 1:
            for number in range(1, config.threads + 1):
                thread_slots.append(self.scoreboard.free_slot())
                self.scoreboard.claim(thread_slots[-1], 0, owner=index, thread=number)
        lifetime = lifetime_limit(config.max_worker_lifetime, config.max_worker_lifetime_jitter)
        spawned_at = time.monotonic()
        worker = Worker(config, server.listeners, self.scoreboard, index, self.control_write, server.app, server,
                        thread_slots)
        worker.end_of_life = spawned_at + lifetime  # monotonic time is the same in the child
        worker.stacks_fd = stacks.new_file()  # 'ctl stacks' reads this worker's stacks from it
        call_hook(config, "pre_fork", server, worker)
        try:
            with signals_held():  # the child gets them once its own handlers are in place
                pid = os.fork()
        except OSError as error:
            for slot in (index, *thread_slots):
                self.scoreboard.release(slot)
            if worker.stacks_fd is not None:
                os.close(worker.stacks_fd)
            delay = self.backoff.worker_exited(0.0, time.monotonic())
            error_log.error("cannot fork a worker: %s; retrying in %.1fs", error.strerror, delay)
            return None
        if pid == 0:
            server.close_in_child()
            self.control_read.close()
            for other in self.workers.values():  # the other workers' stack files are not ours
                stacks.close_file(other)
            worker.run()  # never returns
        for slot in (index, *thread_slots):
            self.scoreboard.set_pid(slot, pid)
        server.telemetry.worker_spawned(index)
        record = WorkerRecord(
            pid=pid, slot=index, spawned_at=spawned_at, generation=server.generation, lifetime=lifetime,
            thread_slots=thread_slots,
        )
        if worker.stacks_fd is not None:
            record.extra["stacks_fd"] = worker.stacks_fd
        self.workers[pid] = record
        error_log.info("booting worker %d", pid)
        return record

    def note_ready(self, now: float) -> None:
        """Mark workers whose slot left BOOTING (the worker also sends 'ready' to wake us)."""
        assert self.scoreboard is not None
        for record in self.workers.values():
            if record.ready_at is None and self.scoreboard.read(record.slot).state in (
                State.IDLE, State.BUSY, State.STOPPING
            ):
                record.ready_at = now
                self.ever_ready = True

    # -- hearing from workers, and their exits -----------------------------------------------

    def read_control(self) -> None:
        """Messages workers send the master: boot failures, readiness, retirement requests."""
        while True:
            try:
                payload = self.control_read.recv(262144)
            except (BlockingIOError, InterruptedError):
                return
            try:
                message = json.loads(payload)
            except ValueError:
                continue
            event, pid = message.get("event"), message.get("pid")
            if event == "boot_failed":
                self.boot_failures[pid] = message.get("message", "")
            elif event == "retire" and pid in self.workers:
                self.retire(self.workers[pid], str(message.get("reason", "")), bool(message.get("exiting")))

    def exited(self, record: WorkerRecord, status: int, now: float, stopping: bool) -> tuple[bool, str]:
        """A reaped worker: free its slot, log its end, run ``child_exit``. Returns whether it
        failed to boot, and the reason it gave (empty if none)."""
        assert self.scoreboard is not None
        if record.ready_at is None and self.scoreboard.read(record.slot).state not in (
            State.BOOTING, State.EMPTY
        ):
            record.ready_at = now
        for slot in (record.slot, *record.thread_slots):
            self.scoreboard.release(slot)
        stacks.close_file(record)
        boot_failed = (os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_BOOT_FAILED
                       and record.ready_at is None)
        self.log_exit(record, status, boot_failed, stopping)
        call_hook(self.server.config, "child_exit", self.server, record)
        if boot_failed:
            self.read_control()
        return boot_failed, self.boot_failures.pop(record.pid, "")

    @staticmethod
    def log_exit(record: WorkerRecord, status: int, boot_failed: bool, stopping: bool) -> None:
        expected = record.expected_exit or stopping
        if os.WIFSIGNALED(status):
            level = error_log.info if expected else error_log.error
            level("worker %d was killed by %s", record.pid, describe_status(status))
        else:
            code = os.WEXITSTATUS(status)
            if code == 0:
                error_log.info("worker %d exited", record.pid)
            elif not boot_failed:
                error_log.error("worker %d exited with code %d", record.pid, code)

    # -- timeouts ------------------------------------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        """Abort workers stuck in the app past ``timeout``, or without a heartbeat while idle."""
        assert self.scoreboard is not None
        config = self.server.config
        timeout = config.timeout
        if timeout <= 0:
            return
        stall = stall_limit(config)
        wall = time.time()
        for record in list(self.workers.values()):
            if record.abort_sent_at is not None or record.kill_sent:
                continue
            view = self.scoreboard.read(record.slot)
            if view.pid != record.pid:
                continue
            for slot in record.thread_slots:
                self._check_thread(record, slot, wall, timeout)
            stuck = overdue(view, wall, timeout, stall)
            if stuck is None or not same_episode(view, self.scoreboard.read(record.slot)):
                continue
            self._abort(record, stuck, view.state, stall)

    def _check_thread(self, record: WorkerRecord, slot: int, wall: float, timeout: float) -> None:
        """One app thread past ``timeout`` in a request: interrupt that request only."""
        assert self.scoreboard is not None
        view = self.scoreboard.read(slot)
        if view.state != State.BUSY or not view.request_start or wall - view.request_start <= timeout:
            return
        if slot in record.thread_aborts or not same_episode(view, self.scoreboard.read(slot)):
            return
        record.thread_aborts[slot] = (view.request_start, time.monotonic())
        error_log.error(
            "worker %d thread %d timed out: '%s' has run %.1fs (timeout %gs); its stack follows, "
            "and the request is interrupted", record.pid, view.thread, view.request_line,
            wall - view.request_start, timeout,
        )
        self.scoreboard.ask_to_abort(slot)
        self.kill(record.pid, TIMEOUT_SIGNAL)

    def _check_interrupted_threads(self, record: WorkerRecord, now: float) -> None:
        """A thread that did not come back from its interrupted request: retire the worker
        gracefully (its replacement first; its other threads finish their requests)."""
        assert self.scoreboard is not None
        for slot, (started, sent_at) in list(record.thread_aborts.items()):
            view = self.scoreboard.read(slot)
            if view.state != State.BUSY or view.request_start != started:
                del record.thread_aborts[slot]  # it came back
            elif now - sent_at > TIMEOUT_KILL_GRACE and record.retiring is None:
                error_log.error("worker %d thread %d is still in its timed-out request; replacing the "
                                "worker gracefully", record.pid, view.thread)
                self.retire(record, "timeout")

    def _abort(self, record: WorkerRecord, stuck: Overdue, state: State, stall: float) -> None:
        record.abort_sent_at = time.monotonic()
        self.server.telemetry.record_restart("timeout")
        if stuck.kind == "busy":
            error_log.error(
                "worker %d timed out: '%s' has run %.1fs (timeout %gs); its stack follows, then it "
                "is replaced", record.pid, stuck.request_line, stuck.seconds, self.server.config.timeout,
            )
        else:
            error_log.error(
                "worker %d is stuck: no heartbeat for %.1fs while %s (limit %.0fs); its stack "
                "follows, then it is replaced", record.pid, stuck.seconds, state.name.lower(), stall,
            )
        self.kill(record.pid, TIMEOUT_SIGNAL)

    def enforce_deadlines(self, now: float) -> None:
        """SIGKILL workers that outlived their stack-dump grace or their graceful_timeout."""
        graceful_timeout = self.server.config.graceful_timeout
        for record in self.workers.values():
            if record.kill_sent:
                continue
            if record.thread_aborts:
                self._check_interrupted_threads(record, now)
            if record.abort_sent_at is not None and now - record.abort_sent_at > TIMEOUT_KILL_GRACE:
                error_log.warning("worker %d still running after its stack dump; killing it", record.pid)
            elif record.stop_sent_at is not None and now - record.stop_sent_at > graceful_timeout:
                error_log.warning(
                    "worker %d did not stop within graceful_timeout (%gs); killing it",
                    record.pid, graceful_timeout,
                )
            else:
                continue
            record.kill_sent = True
            self.kill(record.pid, signal.SIGKILL)

    def next_kill_in(self, now: float) -> float | None:
        """Seconds until the first pending SIGKILL after a stack dump is due, if any."""
        due = [record.abort_sent_at + TIMEOUT_KILL_GRACE - now for record in self.workers.values()
               if record.abort_sent_at is not None and not record.kill_sent]
        return min(due) if due else None

    # -- recycling -----------------------------------------------------------------------------

    def retire(self, record: WorkerRecord, reason: str, exiting: bool = False) -> None:
        """Replace a worker without losing capacity: its replacement is forked now; the worker
        itself is stopped once enough workers are ready (or it exits by itself if ``exiting``)."""
        if record.retiring is not None or record.stop_sent_at is not None:
            record.exiting = record.exiting or exiting  # reached its limit before it was replaced
            return
        record.retiring = reason or "recycled"
        record.exiting = exiting
        self.server.telemetry.record_restart(record.retiring)
        error_log.info(
            "worker %d is being recycled (%s); %s", record.pid, record.retiring,
            "it exits after its response" if exiting else "it stops once its replacement is ready",
        )

    def check_lifetimes(self, now: float) -> None:
        for record in self.workers.values():
            if record.serving and now - record.spawned_at > lifetime_notice(record.lifetime):
                self.retire(record, f"max_worker_lifetime, {now - record.spawned_at:.0f}s old")

    def stop_replaced_retirees(self, target: int, paused: bool) -> None:
        waiting = [record for record in self.workers.values()
                   if record.retiring is not None and not record.exiting and record.stop_sent_at is None]
        if not waiting:
            return
        ready = [record for record in self.serving() if record.ready_at is not None]
        if len(ready) < target and not paused:
            return
        for record in waiting:
            error_log.info("stopping recycled worker %d: its replacement is ready", record.pid)
            self.stop(record, signal.SIGTERM)

    def retire_extra(self, target: int) -> None:
        """Stop workers beyond the target gracefully: idle ones first, oldest first."""
        assert self.scoreboard is not None
        scoreboard = self.scoreboard
        candidates = sorted(
            self.serving(),
            key=lambda record: (scoreboard.read(record.slot).state != State.IDLE, record.spawned_at),
        )
        for record in candidates[: max(0, len(candidates) - target)]:
            self.stop(record, signal.SIGTERM)

    # -- stopping ------------------------------------------------------------------------------

    def stop(self, record: WorkerRecord, signum: int) -> None:
        record.stop_sent_at = time.monotonic()
        self.kill(record.pid, signum)

    def stop_all(self, signum: int, drain: bool) -> None:
        """Stop every worker; with ``drain``, each serves the listen backlog before it exits."""
        assert self.scoreboard is not None
        for record in self.workers.values():
            if drain:
                self.scoreboard.ask_to_drain(record.slot)
            self.stop(record, signum)

    def signal_all(self, signum: int) -> None:
        for pid in list(self.workers):
            self.kill(pid, signum)

    def kill_remaining(self) -> None:
        for pid in list(self.workers):
            error_log.warning("worker %d did not stop in time; killing it", pid)
            self.kill(pid, signal.SIGKILL)

    def kill(self, pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
