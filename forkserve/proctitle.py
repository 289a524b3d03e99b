"""Process titles, so ``ps`` tells the master from the workers and what each is doing."""

from __future__ import annotations

from setproctitle import setproctitle


def set_title(text: str) -> None:
    """Set the title to ``forkserve: <text>``."""
    setproctitle(f"forkserve: {text}")
