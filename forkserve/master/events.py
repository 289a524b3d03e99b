"""What wakes the master: the signals its handlers record, and the descriptors it watches.

A signal handler here does one thing: append the signal to :attr:`Events.signals`.
``signal.set_wakeup_fd`` writes a byte to the wake-up pipe, which ends the loop's sleep in
:meth:`Events.wait`, and the loop acts on the queue in arrival order. So no log line is ever
written from inside a handler, and tests drive the master by queueing signals themselves
(``arbiter.events.signals.append(signal.SIGTTIN); arbiter.handle_signals()``).

Other components add file descriptors to :attr:`Events.readers` / :attr:`Events.writers`
(fd -> callback): the wait polls them too and calls the callback when one is ready — the stats
endpoint's listener and clients, the pipe on which a USR2 successor says it is ready.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable, Iterable
from typing import Any

from forkserve.process import wakeup
from forkserve.process.logs import error_log

Callbacks = dict[int, Callable[[], None]]


class Events:
    """The master's signal queue, wake-up pipe and watched descriptors."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.readers: Callbacks = {}
        # Like readers: fds the loop waits on to become writable (stats replies).
        self.writers: Callbacks = {}
        self.wake_fds: list[int] = []  # polled only to end the sleep (the workers' control channel)
        self.wakeup_read = self.wakeup_write = -1

    def open(self) -> None:
        """The wake-up pipe (no handlers yet: tests drive a prepared master by queueing signals)."""
        self.wakeup_read, self.wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def install_signal_handlers(self, names: Iterable[str]) -> None:
        signal.set_wakeup_fd(self.wakeup_write, warn_on_full_buffer=False)
        for name in names:
            signal.signal(getattr(signal, name), self._record_signal)

    def _record_signal(self, signum: int, frame: Any) -> None:
        """The whole signal handler: remember the signal; the main loop acts on it."""
        self.signals.append(signum)

    def wait(self, timeout: float) -> None:
        """Sleep until a signal, a wake fd, a reader or writer, or the timeout."""
        poller = select.poll()
        for fd in (self.wakeup_read, *self.wake_fds, *self.readers):
            poller.register(fd, select.POLLIN)
        for fd in self.writers:  # (a stats client is never in both dicts)
            poller.register(fd, select.POLLOUT)
        try:
            events = poller.poll(max(0.0, timeout) * 1000)
        except InterruptedError:
            return
        for fd, mask in events:
            if fd == self.wakeup_read:
                wakeup.drain(self.wakeup_read)
            else:
                for callbacks in (self.readers, self.writers):
                    if fd in callbacks:
                        self._run(fd, mask, callbacks)

    def _run(self, fd: int, mask: int, callbacks: Callbacks) -> None:
        if mask & select.POLLNVAL:
            error_log.error("extra fd %d is not open; dropping it", fd)
            del callbacks[fd]
            return
        try:
            callbacks[fd]()
        except Exception:  # noqa: BLE001 -- a failing component must not stop supervision
            error_log.exception("callback for fd %d raised; dropping it", fd)
            callbacks.pop(fd, None)

    def close_in_child(self, *also: int | None) -> None:
        """In a forked worker: drop the master's signal plumbing, its watched fds and ``also``."""
        signal.set_wakeup_fd(-1)
        fds = {self.wakeup_read, self.wakeup_write, *self.readers, *self.writers, *also}
        for fd in fds - {None}:
            try:
                os.close(fd)  # type: ignore[arg-type]
            except OSError:
                pass
        self.readers.clear()
        self.writers.clear()
        self.signals.clear()
