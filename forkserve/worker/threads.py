"""A worker's app threads (``threads`` > 1): the loop hands them complete requests and hears back.

The loop keeps its own thread: it reads, buffers, holds idle connections and flushes, and hands
each complete request to a free app thread (``SimpleQueue``, one ``put``). The thread runs the
app with its own :class:`~forkserve.http.connection.RequestRunner` — so its own scoreboard slot,
its own client-wait bookkeeping — writes the response to the connection's outbound buffer (the
loop does not touch a connection while it is in the app), then queues the outcome and writes a
byte to a pipe the loop watches. The loop does everything after that (flushing, keep-alive), so
connection state is only ever changed by the loop's thread.

A timeout is per request: the master marks the thread's slot and signals the worker; the worker
(in its main thread, where Python runs signal handlers) logs that thread's stack and raises
:class:`~forkserve.worker.worker.WorkerTimeout` in it, asynchronously: it takes effect at the
thread's next Python bytecode — not inside a blocking C call (``time.sleep``, a socket read, a
lock), which must return first.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import traceback
from collections import deque
from typing import Any

from forkserve.http.connection import Outcome, RequestRunner
from forkserve.process.scoreboard import SlotWriter

error_log = logging.getLogger("forkserve.error")


class AppThreads:
    """N threads, each running the app for one request at a time."""

    def __init__(self, runners: list[RequestRunner], slots: list[SlotWriter]) -> None:
        self.runners = runners
        self.slots = slots
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.done: deque[tuple[Any, Outcome | None]] = deque()
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.free = len(runners)
        self.threads = [
            threading.Thread(target=self._work, args=(runner,), name=f"forkserve-app-{number}", daemon=True)
            for number, runner in enumerate(runners, 1)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def hand(self, conn: Any) -> None:
        """Give a complete request to the next free thread (the loop checked ``free``)."""
        self.free -= 1
        self.inbox.put(conn)

    def finished(self) -> list[tuple[Any, Outcome | None]]:
        """The requests the threads are done with since the last call (the loop's side)."""
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        done = self.done
        items = []
        while done:
            items.append(done.popleft())
        self.free += len(items)
        return items

    def _work(self, runner: RequestRunner) -> None:
        inbox, done, write_fd = self.inbox, self.done, self.write_fd
        while True:
            conn = inbox.get()
            if conn is None:
                return
            outcome = None
            try:
                outcome = runner.run(conn)
            except BaseException:  # noqa: BLE001 -- e.g. a timeout outside the app: lose one request, not the thread
                error_log.exception("app thread %s failed outside the app", threading.current_thread().name)
            done.append((conn, outcome))
            try:
                os.write(write_fd, b"!")
            except BlockingIOError:
                pass  # the loop has plenty to wake it already

    def stop(self, timeout: float = 1.0) -> None:
        """Ask every thread to end once it is free (the worker exits soon after anyway)."""
        for _ in self.threads:
            self.inbox.put(None)
        for thread in self.threads:
            thread.join(timeout)

    # -- timeouts ----------------------------------------------------------------------------

    def abort_marked(self, error: type[BaseException], on_abort: Any) -> None:
        """In the main thread, on the master's timeout signal: for each thread whose slot the
        master marked, log its stack and raise ``error`` in it."""
        import ctypes  # (here: only a timeout needs it, and it costs every worker 0.4 MiB)

        frames = sys._current_frames()  # the one way to see another thread's stack
        for slot, thread in zip(self.slots, self.threads, strict=True):
            if not slot.take_abort() or thread.ident is None:
                continue
            frame = frames.get(thread.ident)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no Python frame)\n"
            error_log.error("worker %d: thread %s timed out; its stack:\n%s", os.getpid(), thread.name,
                            stack.rstrip())
            on_abort()
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(error))
