"""The self-pipe that ``signal.set_wakeup_fd`` writes to, shared by the master and the workers.

Both loops sleep in ``poll``/``epoll`` and must wake the moment a signal arrives; the handler
itself only records the signal, and the byte in this pipe is what ends the sleep.
"""

from __future__ import annotations

import os


def drain(read_fd: int) -> None:
    """Empty the non-blocking wake-up pipe so that the next poll sleeps until a new signal."""
    try:
        while os.read(read_fd, 512):
            pass
    except BlockingIOError:
        pass
