"""CPU time and memory of a server's process tree, read from /proc (Linux).

CPU is the sum of user and system time of the master and every live worker, plus what the master
has collected from workers that already exited (``cutime``/``cstime``), so a worker that dies
mid-run does not make its CPU vanish. Sampling before and after a run and dividing by the
requests completed gives server CPU per request — the figure that says how much machine a
request costs, independent of how busy the machine was.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (which may contain spaces)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()


def process_cpu_split(pid: int, include_reaped_children: bool) -> tuple[float, float]:
    """(user, system) CPU seconds of one process (and of its reaped children when asked)."""
    fields = _stat_fields(pid)
    # After the ")" the fields are numbered from 3 (state); utime is field 14, stime 15,
    # cutime 16, cstime 17 — indexes 11..14 here.
    user, system = int(fields[11]), int(fields[12])
    if include_reaped_children:
        user += int(fields[13])
        system += int(fields[14])
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def process_cpu_seconds(pid: int, include_reaped_children: bool) -> float:
    """utime + stime of one process (and of its reaped children when asked), in seconds."""
    return sum(process_cpu_split(pid, include_reaped_children))


def children(pid: int) -> list[int]:
    """Child pids of every thread of ``pid``."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(item) for item in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree_cpu_split(master: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by a master, its live children and its reaped
    children: the system part is the kernel's work for the server (its syscalls, the TCP
    stack on its side), the user part the server's own code."""
    user, system = process_cpu_split(master, include_reaped_children=True)
    for child in children(master):
        try:
            child_user, child_system = process_cpu_split(child, include_reaped_children=True)
        except (OSError, IndexError, ValueError):
            continue  # exited between listing and reading: the master's cutime will hold it
        user += child_user
        system += child_system
    return user, system


def tree_cpu_seconds(master: int) -> float:
    """CPU seconds used so far by a master, its live children and its reaped children."""
    return sum(tree_cpu_split(master))



def _kib_field(path: str, field: str) -> int:
    """One "Name:   N kB" field of a /proc file; 0 when the process is gone (exited, zombie)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) of one process in KiB: every page it maps, shared or not."""
    return _kib_field(f"/proc/{pid}/status", "VmRSS:")


def pss_kib(pid: int) -> int:
    """Proportional set size in KiB: each page divided by the number of processes sharing it.

    RSS counts a page a forked worker shares copy-on-write with its master in full, in every
    worker; PSS is what one worker really adds to the machine's memory.
    """
    return _kib_field(f"/proc/{pid}/smaps_rollup", "Pss:")


def worker_kib(master: int, measure: Callable[[int], int]) -> list[int]:
    """``measure`` (rss_kib or pss_kib) of each of a master's live children (its workers), in KiB."""
    return [size for size in map(measure, children(master)) if size]


def median_worker_kib(master: int, measure: Callable[[int], int]) -> int:
    """The median of ``measure`` (rss_kib or pss_kib) over a master's live children (its
    workers), in KiB."""
    sizes = worker_kib(master, measure)
    return int(statistics.median(sizes)) if sizes else 0
