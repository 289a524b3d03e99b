"""One call per item, in turn or all at once: how a run drives its servers.

Measured runs take the servers one after another (alternating them, so each run has the
machine to itself); smoke runs, which measure nothing, take them all at once to finish sooner.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")


def each(function: Callable[[T], U], items: list[T], parallel: bool) -> list[U]:
    """``function`` over ``items``, results in order; in one thread per item when ``parallel``.

    An exception from any call is raised here (after the others have finished).
    """
    if not parallel or len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(function, items))
