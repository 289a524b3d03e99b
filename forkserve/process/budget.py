"""The cgroup's memory and CPU budget, read live: may the master fork another worker?

The adaptive worker count (``max_workers``) grows the fleet only while it fits: the memory
limit of this process's cgroup (v2 ``memory.max``/``memory.current``, v1
``memory.limit_in_bytes``/``memory.usage_in_bytes``, the tightest limit up the cgroup path) must
have room for one more worker of the current average size, and the CPU the cgroup used over the
last interval (v2 ``cpu.stat`` ``usage_usec``, v1 ``cpuacct.usage``) must be below its CPU quota:
when the quota is used up, another worker only adds contention. Without a quota (no CPU budget
was set; the cgroup may be the whole host's, shared with other work) the CPU does not limit, nor
does a fact the cgroup files do not give.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from forkserve.settings.cpus import CGROUP_ROOT, SELF_CGROUP, cgroup_cpu_limit

NO_LIMIT = 1 << 60  # cgroup v1 reports "unlimited" as a huge number
MEMORY_HEADROOM = 0.9  # grow only while usage + one more worker stays under this share of the limit
CPU_HEADROOM = 0.9  # ... and while the CPUs used stay under this share of the usable CPUs


def _cgroup_dirs(controller: str, root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> list[Path]:
    """This process's directories for ``controller`` (v1) or the unified hierarchy (v2), innermost first."""
    found: list[Path] = []
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, relative = parts
        if controllers == "":
            base = root
        elif controller in controllers.split(","):
            base = next((root / name for name in (controllers, controller) if (root / name).is_dir()), root / controller)
        else:
            continue
        path = base / relative.lstrip("/")
        while True:
            if path.is_dir():
                found.append(path)
            if path == base or path == path.parent:
                break
            path = path.parent
    return found


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().split()[0]
    except (OSError, IndexError):
        return None
    if text == "max":
        return NO_LIMIT
    try:
        return int(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Memory:
    limit: int
    used: int


def memory() -> Memory | None:
    """The tightest memory limit on this process's cgroup path and its usage, or None."""
    limits: list[int] = []
    used: int | None = None
    for directory in _cgroup_dirs("memory"):
        for limit_name, used_name in (("memory.max", "memory.current"),
                                      ("memory.limit_in_bytes", "memory.usage_in_bytes")):
            limit = _read_int(directory / limit_name)
            if limit is not None and limit < NO_LIMIT:
                limits.append(limit)
            if used is None:
                used = _read_int(directory / used_name)
    if not limits or used is None:
        return None
    return Memory(min(limits), used)


def cpu_seconds() -> float | None:
    """CPU time this process's cgroup has used, in seconds (None when unknown)."""
    for directory in _cgroup_dirs("cpuacct") + _cgroup_dirs("cpu"):
        try:
            for line in (directory / "cpu.stat").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "usage_usec":
                    return int(value) / 1e6
        except (OSError, ValueError):
            pass
        usage = _read_int(directory / "cpuacct.usage")
        if usage is not None:
            return usage / 1e9
    return None


class Budget:
    """Answers 'may one more worker start?' from the cgroup, remembering the last CPU reading."""

    def __init__(self) -> None:
        self.quota = cgroup_cpu_limit()  # CPUs; None: no CPU budget to respect
        self.last_cpu: tuple[float, float] | None = None  # (monotonic time, cgroup CPU seconds)

    def cpu_in_use(self) -> float | None:
        """CPUs the cgroup used since the last call (None on the first call, or when unknown)."""
        now, used = time.monotonic(), cpu_seconds()
        if used is None:
            return None
        previous, self.last_cpu = self.last_cpu, (now, used)
        if previous is None or now - previous[0] <= 0:
            return None
        return (used - previous[1]) / (now - previous[0])

    def refusal(self, worker_rss: int) -> str | None:
        """Why one more worker of ``worker_rss`` bytes must not start now, or None when it may."""
        cpus = self.cpu_in_use() if self.quota is not None else None
        if cpus is not None and self.quota is not None and cpus >= CPU_HEADROOM * self.quota:
            return f"the cgroup's CPU quota is used up ({cpus:.2f} of {self.quota:g} CPUs in use)"
        budget = memory()
        if budget is not None and budget.used + worker_rss > MEMORY_HEADROOM * budget.limit:
            return (f"the cgroup's memory budget is used up ({budget.used / 2**20:.0f} MB of "
                    f"{budget.limit / 2**20:.0f} MB, a worker needs about {worker_rss / 2**20:.0f} MB)")
        return None
