"""The worker's once-a-second thread: its process title, and the ``--reload`` watch.

Keeping these out of the request path is the point: the request path only writes the
scoreboard slot (one memory store per request start and end); this daemon thread reads that
slot once a second and calls ``setproctitle`` only when the text changed, and under ``--reload``
polls the app's source files' mtimes. The thread never touches a connection.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from forkserve.process.logs import error_log
from forkserve.process.proctitle import set_title, worker_title
from forkserve.process.scoreboard import Scoreboard
from forkserve.worker.reloader import Reloader

INTERVAL = 1.0


class WorkerMonitor(threading.Thread):
    """Refreshes the title from the slot; restarts the worker (TERM to itself) on a source change."""

    def __init__(self, name: str, scoreboard: Scoreboard, slot: int, reloader: Reloader | None,
                 thread_slots: list[int] | None = None) -> None:
        super().__init__(name="forkserve-monitor", daemon=True)
        self.app_name = name
        self.scoreboard = scoreboard
        self.slot = slot
        self.thread_slots = thread_slots or []
        self.reloader = reloader
        self.title = ""

    def run(self) -> None:
        while True:
            self.tick()
            time.sleep(INTERVAL)

    def tick(self) -> None:
        threads = [self.scoreboard.read(slot) for slot in self.thread_slots]
        title = worker_title(self.app_name, self.scoreboard.read(self.slot), time.time(), threads)
        if title != self.title:
            self.title = title
            set_title(title)
        if self.reloader is not None:
            changed = self.reloader.changed()
            if changed is not None:
                self.reloader = None
                error_log.info("worker %d: %s changed; restarting", os.getpid(), changed)
                os.kill(os.getpid(), signal.SIGTERM)  # finish the request in hand, then exit


def start(worker: Any) -> WorkerMonitor:
    """Once the worker is ready (and has told the master so): start the monitor thread."""
    config = worker.config
    reloader = None
    if config.reload:
        reloader = Reloader(config.reload_extra_files)
        reloader.changed()  # the baseline mtimes now, not whenever the thread first runs
    monitor = WorkerMonitor(config.app_name, worker.scoreboard, worker.slot_index, reloader, worker.thread_slots)
    monitor.start()
    return monitor
