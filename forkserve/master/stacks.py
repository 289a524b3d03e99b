"""Every worker's every thread's Python stack, on demand (``forkserve ctl stacks``), live.

Each worker gets, at fork, a file of its own that only it and the master hold (an anonymous
``memfd``). To collect, the master empties every file and sends each worker
:data:`~forkserve.process.stackdump.STACKS_SIGNAL`. In the worker, ``faulthandler`` writes every
thread's stack into the file from the C signal handler — so a worker whose main thread is stuck
in C (a sleep, a lock, a long computation in an extension) still answers — and the worker's
Python handler, chained after it, adds the threads' names and an end marker. Nothing is stopped
or interrupted. The master polls the files (a few times per tenth of a second) until every
worker has finished or the deadline passes, and reports what arrived: a worker that did not
finish is shown with whatever part of its dump was written, or as not answering.
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from forkserve.process.logs import error_log
from forkserve.process.scoreboard import Scoreboard, State
from forkserve.process.stackdump import STACKS_END, STACKS_SIGNAL, STACKS_THREADS

WorkerRecord = Any  # forkserve.master.fleet.WorkerRecord (not imported: the fleet imports this module)

DEADLINE = 2.0  # seconds the workers get to write their stacks
POLL = 0.05
MAX_DUMP = 4 * 1024 * 1024
_THREAD_LINE = re.compile(r"^(Current thread|Thread) (0x[0-9a-f]+)", re.MULTILINE)
_NAME_LINE = re.compile(r"^thread (0x[0-9a-f]+) (.*)$", re.MULTILINE)


def new_file() -> int | None:
    """A worker's stack file, made before its fork (None if the system has no memfd)."""
    try:
        return os.memfd_create("forkserve-stacks", os.MFD_CLOEXEC)
    except (AttributeError, OSError) as error:
        error_log.warning("cannot make a stack file for a worker: %s; 'ctl stacks' will not reach it", error)
        return None


def close_file(record: WorkerRecord) -> None:
    fd = record.extra.pop("stacks_fd", None)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


@dataclass
class _Pending:
    record: WorkerRecord
    fd: int | None
    header: str
    text: str = ""
    done: bool = False
    exited: bool = False


@dataclass
class StackCollection:
    """One collection under way; ``replies`` are callbacks waiting for its report."""

    pending: list[_Pending]
    deadline: float
    scoreboard: Scoreboard
    replies: list[Any] = field(default_factory=list)

    @classmethod
    def start(cls, records: list[WorkerRecord], scoreboard: Scoreboard) -> StackCollection:
        """Empty every worker's file and signal it."""
        pending = []
        for record in sorted(records, key=lambda item: item.spawned_at):
            fd = record.extra.get("stacks_fd")
            item = _Pending(record, fd, _describe(record, scoreboard))
            pending.append(item)
            if fd is None:
                item.done, item.text = True, "(no stack file: this worker cannot be asked)\n"
                continue
            try:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.kill(record.pid, STACKS_SIGNAL)
            except OSError as error:
                item.done, item.text = True, f"(cannot ask it: {error.strerror or error})\n"
        return cls(pending, time.monotonic() + DEADLINE, scoreboard)

    def poll(self, now: float) -> bool:
        """Read what the workers wrote; True once all have finished or the deadline passed."""
        for item in self.pending:
            if item.done or item.fd is None:
                continue
            try:
                item.text = os.pread(item.fd, MAX_DUMP, 0).decode("utf-8", "replace")
            except OSError:
                continue
            item.done = STACKS_END in item.text
        return all(item.done for item in self.pending) or now >= self.deadline

    def worker_exited(self, record: WorkerRecord) -> None:
        for item in self.pending:
            if item.record is record and not item.done:
                self.poll(0.0)
                item.exited = True
                item.done = True

    def report(self) -> str:
        """The stacks as text, worker by worker, thread names and requests filled in."""
        lines = [f"{len(self.pending)} worker(s)"]
        for item in self.pending:
            lines += ["", item.header]
            lines.append(_annotate(item, self.scoreboard))
        return "\n".join(lines).rstrip() + "\n"


def _describe(record: WorkerRecord, scoreboard: Scoreboard) -> str:
    view = scoreboard.read(record.slot)
    state = view.state.name.lower() if view.pid == record.pid else "?"
    role = ""
    if record.thread_slots:
        busy = sum(scoreboard.read(slot).state == State.BUSY for slot in record.thread_slots)
        role = f", {busy}/{len(record.thread_slots)} app threads busy"
    if record.stop_sent_at is not None:
        state += ", stopping"
    elif record.retiring is not None:
        state += f", being recycled ({record.retiring})"
    return f"=== worker {record.pid} (generation {record.generation}, {state}{role}) ==="


def _request_of(scoreboard: Scoreboard, slot: int, now: float) -> str:
    view = scoreboard.read(slot)
    if view.state == State.BUSY and view.request_start:
        return f"busy: {view.request_line} for {max(0.0, now - view.request_start):.1f}s"
    return view.state.name.lower()


def _annotate(item: _Pending, scoreboard: Scoreboard) -> str:
    text = item.text
    if not text.strip():
        why = "it exited" if item.exited else f"no answer within {DEADLINE:g}s"
        return f"(no stacks: {why})"
    body, _, tail = text.partition(STACKS_THREADS)
    complete = STACKS_END in tail
    names = dict(_NAME_LINE.findall(tail)) if complete else {}
    now = time.time()
    record = item.record
    thread_request = {f"forkserve-app-{scoreboard.read(slot).thread}": _request_of(scoreboard, slot, now)
                      for slot in record.thread_slots}

    def name(match: re.Match[str]) -> str:
        ident = match.group(2)
        label = names.get(ident)
        if label is None:
            return match.group(0)
        if label in thread_request:
            label = f"{label}, {thread_request[label]}"
        elif label == "MainThread":
            label = "MainThread, the worker's loop" if record.thread_slots else \
                f"MainThread, {_request_of(scoreboard, record.slot, now)}"
        return f"{match.group(1)} {ident} ({label})"

    body = _THREAD_LINE.sub(name, body).rstrip()
    if not complete:
        why = "it exited" if item.exited else f"it did not finish within {DEADLINE:g}s"
        body += f"\n(incomplete: {why}; its main thread may be stuck in C code)"
    return body


def ignore_in_master() -> None:
    """The master never acts on the stacks signal (a stray one must not end it)."""
    signal.signal(STACKS_SIGNAL, signal.SIG_IGN)
