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
    136 ...            reserved for counters (metrics)
    504 drain          uint8     set by the master before a shutdown TERM: serve the backlog first
"""

from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass
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
    # worker's own header/body timeouts, so never a worker timeout. (issue 3, http branch)
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


class Scoreboard:
    """The shared memory. Created by the master; survives fork; one slot per live worker."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.memory = mmap.mmap(-1, capacity * SLOT_SIZE, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)

    def free_slot(self) -> int:
        """Index of a slot owned by no worker. Raises RuntimeError when all are taken."""
        for index in range(self.capacity):
            if _STATE.unpack_from(self.memory, index * SLOT_SIZE + 4)[0] == State.EMPTY:
                return index
        raise RuntimeError("scoreboard is full")

    def claim(self, index: int, pid: int) -> None:
        """Reset a slot for a worker about to be forked (the master, before fork)."""
        offset = index * SLOT_SIZE
        self.memory[offset:offset + SLOT_SIZE] = bytes(SLOT_SIZE)
        now = time.time()
        _HEAD.pack_into(self.memory, offset, pid, State.BOOTING, 0.0, now, 0)
        _BOOTED.pack_into(self.memory, offset + BOOTED_OFFSET, now)

    def set_pid(self, index: int, pid: int) -> None:
        """Record the pid of the worker forked into a claimed slot (the master, after fork)."""
        _PID.pack_into(self.memory, index * SLOT_SIZE, pid)

    def release(self, index: int) -> None:
        """Mark a slot empty after its worker has been reaped."""
        offset = index * SLOT_SIZE
        self.memory[offset:offset + SLOT_SIZE] = bytes(SLOT_SIZE)

    def ask_to_drain(self, index: int) -> None:
        """Tell a worker that its coming TERM is the server's shutdown: serve the queue first.

        Other stops (reload, recycling, TTOU) must not drain: under load the queue may never be
        empty, and the other workers are still serving it.
        """
        _STATE.pack_into(self.memory, index * SLOT_SIZE + DRAIN_OFFSET, 1)

    def read(self, index: int) -> SlotView:
        """A snapshot of one slot."""
        offset = index * SLOT_SIZE
        pid, state, start, heartbeat, requests = _HEAD.unpack_from(self.memory, offset)
        line = _LINE.unpack_from(self.memory, offset + LINE_OFFSET)[0].rstrip(b"\0")
        booted = _BOOTED.unpack_from(self.memory, offset + BOOTED_OFFSET)[0]
        return SlotView(
            index, pid, State(state), start, heartbeat, requests, line.decode("latin-1"), booted
        )

    def slots(self) -> list[SlotView]:
        """Snapshots of every slot in use."""
        return [view for view in map(self.read, range(self.capacity)) if view.state != State.EMPTY]

    def writer(self, index: int) -> SlotWriter:
        """The handle a worker uses to report on its own slot."""
        return SlotWriter(self.memory, index * SLOT_SIZE)


class SlotWriter:
    """A worker's own slot. Each method is one memory store, cheap enough for every request."""

    __slots__ = ("memory", "offset", "requests")

    def __init__(self, memory: mmap.mmap, offset: int) -> None:
        self.memory = memory
        self.offset = offset
        self.requests = 0

    def busy(self, started: float, request_line: bytes) -> None:
        _BUSY.pack_into(
            self.memory, self.offset + 4, State.BUSY, started, started, self.requests, request_line
        )

    def client_wait(self) -> None:
        """Blocked on the client within a request; busy() ends it. (issue 3, http branch)"""
        _STATE.pack_into(self.memory, self.offset + 4, State.CLIENT)

    def idle(self, now: float) -> None:
        self.requests += 1
        _IDLE.pack_into(self.memory, self.offset + 4, State.IDLE, 0.0, now, self.requests)

    def ready(self, now: float) -> None:
        _IDLE.pack_into(self.memory, self.offset + 4, State.IDLE, 0.0, now, self.requests)

    def heartbeat(self, now: float) -> None:
        _HEARTBEAT.pack_into(self.memory, self.offset + 16, now)

    def stopping(self) -> None:
        _STATE.pack_into(self.memory, self.offset + 4, State.STOPPING)

    def drain_requested(self) -> bool:
        """Did the master ask this worker to serve the listen backlog before exiting?"""
        return bool(_STATE.unpack_from(self.memory, self.offset + DRAIN_OFFSET)[0])
