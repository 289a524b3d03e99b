"""The scoreboard: one shared anonymous mmap, one fixed-size slot per worker.

The master creates it before forking, so every worker shares the same pages. A worker reports
its state with plain memory stores — one ``struct.pack_into`` when a request starts and one when
it ends, no syscall — and the master reads every slot to enforce timeouts and to serve stats.
There is no lock: a reader may see a slot mid-update, so readers treat values as a snapshot and
confirm anything they act on (the timeout check re-reads before killing).

Slot layout (little-endian, offsets in bytes)::

    0   pid            int32
    4   state          uint8 (+3 pad)
    8   request_start  float64   wall-clock start of the current request, 0 when none
    16  heartbeat      float64   last time the worker showed it was alive
    24  requests       uint64    requests served by this worker
    32  request_line   96 bytes  "METHOD /path" of the current request, NUL padded
    128 booted_at      float64   when the worker process started
    136 status_counts  6 x uint64   responses by status class: 1xx 2xx 3xx 4xx 5xx other
    184 buckets        14 x uint64  request durations, one count per bucket of DURATION_BUCKETS
                                    (not cumulative; the last is +Inf)
    296 duration_sum   float64   seconds spent on requests, summed
    304 bytes_out      uint64    bytes written to clients (heads included)
    312 queue_buckets  14 x uint64  time ready requests waited for the app, like buckets
    424 queue_sum      float64   seconds ready requests waited for the app, summed
    432 connections    4 x uint32   connections held: reading, idle, in the app, flushing
    448 owner          int32     a thread slot: its worker's slot index + 1 (0: a worker's own slot)
    452 thread         uint16    a thread slot: the thread's number (1..threads)
    456 shed           uint64    requests answered 503 by max_queue_time instead of the app
    464 queue_peak     float64   the worst queue time of the requests begun in the current window
    472 queue_peak_at  float64   when that window began (wall clock); a window lasts QUEUE_WINDOW
    480 ...            free
    505 abort          uint8     set by the master on a thread slot: time this request out
    504 drain          uint8     set by the master before a shutdown TERM: serve the backlog first

When a request ends the worker adds to its counters in place — four aligned 8-byte stores through
a memoryview, no syscall, no lock, each one atomic for a reader — next to the one
``struct.pack_into`` that marks the slot idle. (Measured with callgrind this costs less than
folding the counters into that pack_into: converting twenty arguments is the expensive part.)
A slot's counters die with its worker, so the master folds them into ``Scoreboard.retired``
when it releases the slot: totals never go backwards when workers recycle.
"""

from __future__ import annotations

import mmap
import struct
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from enum import IntEnum

SLOT_SIZE = 512
REQUEST_LINE_SIZE = 96


class State(IntEnum):
    """What a worker is doing; EMPTY slots belong to no process."""

    EMPTY = 0
    BOOTING = 1
    IDLE = 2
    BUSY = 3
    STOPPING = 4
    # In a request but waiting on the client (body bytes, or room to send): bounded by the
    # worker's own header/body timeouts, so never a worker timeout.
    CLIENT = 5


_HEAD = struct.Struct("<iB3xddQ")  # pid, state, request_start, heartbeat, requests
_BUSY = struct.Struct(f"<B3xddQ{REQUEST_LINE_SIZE}s")  # at offset 4
_IDLE = struct.Struct("<B3xddQ")  # at offset 4
_STATE = struct.Struct("<B")
_PID = struct.Struct("<i")
_HEARTBEAT = struct.Struct("<d")
_LINE = struct.Struct(f"<{REQUEST_LINE_SIZE}s")
_BOOTED = struct.Struct("<d")
LINE_OFFSET = 32
BOOTED_OFFSET = 128
DRAIN_OFFSET = 504
ABORT_OFFSET = 505
HELD_OFFSET = 508  # connections the worker holds (uint32) while it accepts, else NOT_ACCEPTING
NOT_ACCEPTING = 0xFFFFFFFF  # a count no worker reaches: "takes no connection now"
_IDLE_STATE = bytes([State.IDLE])
OWNER_OFFSET = 448
_OWNER = struct.Struct("<iH")  # owner slot + 1, thread number
_SHED = struct.Struct("<Q")
SHED_OFFSET = 456
QUEUE_PEAK_OFFSET = 464
_QUEUE_PEAK = struct.Struct("<dd")  # queue_peak, queue_peak_at
QUEUE_WINDOW = 5.0  # seconds: a worker's "current worst queue time" covers the last 5 to 10 s

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
# code // 100 -> index in STATUS_CLASSES; 0 (no response was started) and 6..9 are "other"
_CLASS_INDEX = (5, 0, 1, 2, 3, 4, 5, 5, 5, 5)
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_N_CLASSES = len(STATUS_CLASSES)
_N_BUCKETS = len(DURATION_BUCKETS) + 1  # + the +Inf bucket
_SUM_INDEX = _N_CLASSES + _N_BUCKETS
_BYTES_INDEX = _SUM_INDEX + 1
COUNTERS_OFFSET = 136
_QUEUE_INDEX = _BYTES_INDEX + 1
_QUEUE_SUM_INDEX = _QUEUE_INDEX + _N_BUCKETS
_COUNTERS = struct.Struct(f"<{_N_CLASSES}Q{_N_BUCKETS}QdQ{_N_BUCKETS}Qd")
CONNECTIONS_OFFSET = 432
_CONNECTIONS = struct.Struct("<4I")  # reading, idle, in the app, flushing
CONNECTION_STATES = ("reading", "idle", "app", "flushing")
assert COUNTERS_OFFSET % 8 == 0 and COUNTERS_OFFSET + _COUNTERS.size <= CONNECTIONS_OFFSET
assert CONNECTIONS_OFFSET + _CONNECTIONS.size <= OWNER_OFFSET and OWNER_OFFSET + _OWNER.size <= SHED_OFFSET
assert ABORT_OFFSET < HELD_OFFSET and HELD_OFFSET % 4 == 0 and HELD_OFFSET + 4 <= SLOT_SIZE
assert QUEUE_PEAK_OFFSET + _QUEUE_PEAK.size <= DRAIN_OFFSET and SHED_OFFSET % 8 == QUEUE_PEAK_OFFSET % 8 == 0


@dataclass
class Counters:
    """Request counters: one worker's, or the sum over many (live slots plus retired ones)."""

    requests: int = 0
    status: list[int] = field(default_factory=lambda: [0] * _N_CLASSES)
    buckets: list[int] = field(default_factory=lambda: [0] * _N_BUCKETS)
    duration_sum: float = 0.0
    bytes_out: int = 0
    queue_buckets: list[int] = field(default_factory=lambda: [0] * _N_BUCKETS)
    queue_sum: float = 0.0
    shed: int = 0

    def add(self, other: Counters) -> None:
        """Fold another set of counters into this one."""
        self.requests += other.requests
        self.status = [mine + theirs for mine, theirs in zip(self.status, other.status, strict=True)]
        self.buckets = [mine + theirs for mine, theirs in zip(self.buckets, other.buckets, strict=True)]
        self.duration_sum += other.duration_sum
        self.bytes_out += other.bytes_out
        self.queue_buckets = [mine + theirs for mine, theirs in
                              zip(self.queue_buckets, other.queue_buckets, strict=True)]
        self.queue_sum += other.queue_sum
        self.shed += other.shed

    @property
    def by_status_class(self) -> dict[str, int]:
        return dict(zip(STATUS_CLASSES, self.status, strict=True))

    @property
    def timed(self) -> int:
        """How many requests the duration histogram holds."""
        return sum(self.buckets)


@dataclass(frozen=True)
class SlotView:
    """A snapshot of one slot, as read by the master or the stats endpoint."""

    index: int
    pid: int
    state: State
    request_start: float
    heartbeat: float
    requests: int
    request_line: str
    booted_at: float
    connections: tuple[int, int, int, int] = (0, 0, 0, 0)  # by CONNECTION_STATES
    owner: int | None = None  # a thread slot: the slot of the worker it belongs to
    thread: int = 0  # a thread slot: the thread's number (from 1)


class Scoreboard:
    """The shared memory. Created by the master; survives fork; one slot per live worker."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.memory = mmap.mmap(-1, capacity * SLOT_SIZE, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.retired = Counters()  # the master's own memory: counters of released slots
        self.memory_bytes = memoryview(self.memory)  # (plain indexing: the cheapest read)
        self.memory_cells = self.memory_bytes.cast("I")

    def free_slot(self) -> int:
        """Index of a slot owned by no worker. Raises RuntimeError when all are taken."""
        for index in range(self.capacity):
            if _STATE.unpack_from(self.memory, index * SLOT_SIZE + 4)[0] == State.EMPTY:
                return index
        raise RuntimeError("scoreboard is full")

    def claim(self, index: int, pid: int, owner: int | None = None, thread: int = 0) -> None:
        """Reset a slot for a worker about to be forked (the master, before fork); with
        ``owner``, the slot of one of that worker's app threads."""
        offset = index * SLOT_SIZE
        self.memory[offset:offset + SLOT_SIZE] = bytes(SLOT_SIZE)
        if owner is not None:
            _OWNER.pack_into(self.memory, offset + OWNER_OFFSET, owner + 1, thread)
        now = time.time()
        _HEAD.pack_into(self.memory, offset, pid, State.BOOTING, 0.0, now, 0)
        _BOOTED.pack_into(self.memory, offset + BOOTED_OFFSET, now)

    def set_pid(self, index: int, pid: int) -> None:
        """Record the pid of the worker forked into a claimed slot (the master, after fork)."""
        _PID.pack_into(self.memory, index * SLOT_SIZE, pid)

    def release(self, index: int) -> None:
        """Mark a slot empty after its worker has been reaped, keeping its counters in ``retired``."""
        self.retired.add(self.counters(index))
        offset = index * SLOT_SIZE
        self.memory[offset:offset + SLOT_SIZE] = bytes(SLOT_SIZE)

    def ask_to_drain(self, index: int) -> None:
        """Tell a worker that its coming TERM is the server's shutdown: serve the queue first.

        Other stops (reload, recycling, TTOU) must not drain: under load the queue may never be
        empty, and the other workers are still serving it.
        """
        _STATE.pack_into(self.memory, index * SLOT_SIZE + DRAIN_OFFSET, 1)

    def ask_to_abort(self, index: int) -> None:
        """Tell a worker which of its threads the coming timeout signal is for."""
        _STATE.pack_into(self.memory, index * SLOT_SIZE + ABORT_OFFSET, 1)

    def counters(self, index: int) -> Counters:
        """One slot's request counters (a snapshot; the worker may be updating them)."""
        offset = index * SLOT_SIZE
        values = _COUNTERS.unpack_from(self.memory, offset + COUNTERS_OFFSET)
        requests = _HEAD.unpack_from(self.memory, offset)[4]
        return Counters(
            requests,
            list(values[:_N_CLASSES]),
            list(values[_N_CLASSES:_SUM_INDEX]),
            values[_SUM_INDEX],
            values[_BYTES_INDEX],
            list(values[_QUEUE_INDEX:_QUEUE_SUM_INDEX]),
            values[_QUEUE_SUM_INDEX],
            _SHED.unpack_from(self.memory, offset + SHED_OFFSET)[0],
        )

    def queue_peak(self, index: int, now: float) -> float:
        """The worst queue time of the requests a slot began in the last QUEUE_WINDOW to twice
        that (0 when it began none)."""
        peak, since = _QUEUE_PEAK.unpack_from(self.memory, index * SLOT_SIZE + QUEUE_PEAK_OFFSET)
        return peak if now - since < 2 * QUEUE_WINDOW else 0.0

    def totals(self) -> Counters:
        """Counters of every request served since start: live slots plus released ones."""
        total = Counters()
        total.add(self.retired)
        for index in range(self.capacity):
            if _STATE.unpack_from(self.memory, index * SLOT_SIZE + 4)[0] != State.EMPTY:
                total.add(self.counters(index))
        return total

    def read(self, index: int) -> SlotView:
        """A snapshot of one slot."""
        offset = index * SLOT_SIZE
        pid, state, start, heartbeat, requests = _HEAD.unpack_from(self.memory, offset)
        line = _LINE.unpack_from(self.memory, offset + LINE_OFFSET)[0].rstrip(b"\0")
        booted = _BOOTED.unpack_from(self.memory, offset + BOOTED_OFFSET)[0]
        connections = _CONNECTIONS.unpack_from(self.memory, offset + CONNECTIONS_OFFSET)
        owner, thread = _OWNER.unpack_from(self.memory, offset + OWNER_OFFSET)
        return SlotView(
            index, pid, State(state), start, heartbeat, requests, line.decode("latin-1"), booted,
            connections, owner - 1 if owner else None, thread,
        )

    def idle_thread_elsewhere(self, own: int) -> bool:
        """Is there an idle app thread in a serving worker other than the one in slot ``own``?
        (Read by a worker whose own threads are all busy; a few unpacks per slot in use.)"""
        memory = self.memory
        for index in range(self.capacity):
            offset = index * SLOT_SIZE
            if _STATE.unpack_from(memory, offset + 4)[0] != State.IDLE:
                continue
            owner = _OWNER.unpack_from(memory, offset + OWNER_OFFSET)[0] - 1
            if owner < 0 or owner == own:
                continue  # a worker's own slot, or one of this worker's threads
            if _STATE.unpack_from(memory, owner * SLOT_SIZE + 4)[0] in (State.IDLE, State.BUSY, State.CLIENT):
                return True
        return False

    def fewest_held_elsewhere(self, own: int) -> int:
        """The fewest connections held by a worker other than slot ``own`` that accepts
        connections now (NOT_ACCEPTING when there is none). A worker counts while it is
        registered for its listeners (it writes NOT_ACCEPTING otherwise) and its slot says idle:
        a sync worker in the middle of an app call does not accept until it returns, and a
        booting or stopping worker not at all. Read by a worker that holds connections,
        to leave newcomers to an emptier sibling; a few indexings per slot."""
        cells = self.memory_cells
        states = self.memory_bytes[4::SLOT_SIZE].tobytes()  # every slot's state, in one C-level copy
        fewest = NOT_ACCEPTING
        index = states.find(_IDLE_STATE)
        while index >= 0:
            offset = index * SLOT_SIZE
            if index != own and not cells[(offset + OWNER_OFFSET) // 4]:  # (not an app thread's slot)
                held = cells[(offset + HELD_OFFSET) // 4]
                fewest = min(fewest, held)
            index = states.find(_IDLE_STATE, index + 1)
        return fewest

    def slots(self) -> list[SlotView]:
        """Snapshots of every slot in use."""
        return [view for view in map(self.read, range(self.capacity)) if view.state != State.EMPTY]

    def writer(self, index: int) -> SlotWriter:
        """The handle a worker uses to report on its own slot."""
        return SlotWriter(self.memory, index * SLOT_SIZE)


class SlotWriter:
    """A worker's own slot. Each method is a few plain memory stores, cheap enough for every request."""

    __slots__ = ("begun", "cells", "counters", "counters_base", "held_cell", "memory", "offset", "requests", "sums")

    def __init__(self, memory: mmap.mmap, offset: int) -> None:
        self.memory = memory
        self.offset = offset
        self.requests = 0  # requests finished
        self.begun = 0  # requests begun: the one in hand counts (the recycling budget reads it)
        # The slot's counters as arrays of 8-byte cells: each update is one aligned store.
        self.counters = memoryview(memory).cast("Q")
        self.sums = memoryview(memory).cast("d")
        self.counters_base = (offset + COUNTERS_OFFSET) // 8
        self.cells = memoryview(memory).cast("I")
        self.held_cell = (offset + HELD_OFFSET) // 4

    def begin(self, started: float, request_line: bytes) -> None:
        """A request starts: count it as begun and show the slot busy."""
        self.begun += 1
        self.busy(started, request_line)

    def busy(self, started: float, request_line: bytes) -> None:
        _BUSY.pack_into(
            self.memory, self.offset + 4, State.BUSY, started, started, self.requests, request_line
        )

    def client_wait(self) -> None:
        """Blocked on the client within a request (not time in the app); busy() ends it."""
        _STATE.pack_into(self.memory, self.offset + 4, State.CLIENT)

    def idle(self, now: float, started: float, status: int, sent: int, queue_time: float = 0.0) -> None:
        """A request ended: count it (status class, duration, bytes, the time it waited for the
        app) and show the slot idle."""
        self.requests += 1
        counters = self.counters
        base = self.counters_base
        counters[base + _CLASS_INDEX[status // 100]] += 1
        duration = now - started
        counters[base + _N_CLASSES + bisect_left(DURATION_BUCKETS, duration)] += 1
        self.sums[base + _SUM_INDEX] += duration
        counters[base + _BYTES_INDEX] += sent
        counters[base + _QUEUE_INDEX + bisect_left(DURATION_BUCKETS, queue_time)] += 1
        self.sums[base + _QUEUE_SUM_INDEX] += queue_time
        _IDLE.pack_into(self.memory, self.offset + 4, State.IDLE, 0.0, now, self.requests)

    def queued(self, queue_time: float) -> None:
        """A request reaches the app (or is shed) after waiting ``queue_time``: keep the worst of
        the current window (what /stats shows per worker and the adaptive fleet reads)."""
        now = time.time()
        peak, since = _QUEUE_PEAK.unpack_from(self.memory, self.offset + QUEUE_PEAK_OFFSET)
        if now - since >= QUEUE_WINDOW:
            _QUEUE_PEAK.pack_into(self.memory, self.offset + QUEUE_PEAK_OFFSET, queue_time, now)
        elif queue_time > peak:
            self.sums[(self.offset + QUEUE_PEAK_OFFSET) // 8] = queue_time

    def shed(self) -> None:
        """Count a request answered 503 because it waited past max_queue_time."""
        self.counters[(self.offset + SHED_OFFSET) // 8] += 1

    def ready(self, now: float) -> None:
        _IDLE.pack_into(self.memory, self.offset + 4, State.IDLE, 0.0, now, self.requests)

    def connections(self, reading: int, idle: int, in_app: int, flushing: int) -> None:
        """How many connections the worker holds, by state (written by its loop)."""
        _CONNECTIONS.pack_into(self.memory, self.offset + CONNECTIONS_OFFSET, reading, idle, in_app, flushing)

    def held(self, connections: int) -> None:
        """How many connections the worker holds while it accepts, else NOT_ACCEPTING (its
        siblings read it to share newcomers)."""
        self.cells[self.held_cell] = connections

    def heartbeat(self, now: float) -> None:
        _HEARTBEAT.pack_into(self.memory, self.offset + 16, now)

    def stopping(self) -> None:
        _STATE.pack_into(self.memory, self.offset + 4, State.STOPPING)

    def drain_requested(self) -> bool:
        """Did the master ask this worker to serve the listen backlog before exiting?"""
        return bool(_STATE.unpack_from(self.memory, self.offset + DRAIN_OFFSET)[0])

    def take_abort(self) -> bool:
        """A thread slot: did the master time its request out? (The flag is cleared.)"""
        asked = bool(_STATE.unpack_from(self.memory, self.offset + ABORT_OFFSET)[0])
        if asked:
            _STATE.pack_into(self.memory, self.offset + ABORT_OFFSET, 0)
        return asked
