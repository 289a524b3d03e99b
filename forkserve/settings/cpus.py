"""How many CPUs this process may really use.

``os.cpu_count()`` reports the host's cores. In a container limited by a cgroup CPU quota, or a
process pinned with ``taskset``, that over-counts, and a server sizing its worker pool from it
over-forks. This module takes the smallest of the affinity mask and the cgroup quota (v2
``cpu.max`` or v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), rounding a fractional quota up.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class CpuBudget:
    """The usable CPU count and a phrase saying where it came from (logged at start)."""

    count: int
    reason: str


def _own_cgroup_dirs(root: Path, self_cgroup: Path) -> list[Path]:
    """The cgroup directories of this process, innermost first, for v2 and v1 'cpu' hierarchies.

    Each level up to the hierarchy's root counts: a limit on a parent cgroup binds its children,
    and inside a container without a cgroup namespace the path named in ``self_cgroup`` (the
    host's view) does not exist under the container's mount, so only the walk up finds the
    container's own limit at the mount's top.
    """
    candidates: list[Path] = []
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, relative = parts
        relative = relative.lstrip("/")
        if controllers == "":
            base = root
        elif "cpu" in controllers.split(","):
            base = root / controllers if (root / controllers).is_dir() else root / "cpu"
        else:
            continue
        path = base / relative
        while True:
            candidates.append(path)
            if path == base:
                break
            path = path.parent
    candidates.append(root)
    return candidates


def _quota_of(directory: Path) -> float | None:
    """CPUs allowed by a quota file in ``directory``, or None when it sets no limit."""
    cpu_max = directory / "cpu.max"
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((directory / "cpu.cfs_quota_us").read_text())
        period_us = int((directory / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> float | None:
    """The tightest CPU quota on this process's cgroup path, in CPUs, or None."""
    limits = [
        limit for directory in _own_cgroup_dirs(root, self_cgroup)
        if (limit := _quota_of(directory)) is not None
    ]
    return min(limits) if limits else None


def _cpus(count: float) -> str:
    return f"{count:g} CPU" + ("" if count == 1 else "s")


def choose_budget(affinity: int, host: int, quota: float | None) -> CpuBudget:
    """The decision, apart from gathering the facts: min(affinity, quota rounded up), at least 1."""
    if quota is not None and math.ceil(quota) < affinity:
        return CpuBudget(max(1, math.ceil(quota)), f"cgroup CPU quota of {_cpus(quota)}")
    if affinity < host:
        return CpuBudget(affinity, f"CPU affinity mask of {affinity} of {_cpus(host)}")
    return CpuBudget(affinity, _cpus(affinity))


def cpu_budget(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> CpuBudget:
    """Usable CPUs for this process now: affinity mask, host count and cgroup quota combined."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    host = max(os.cpu_count() or affinity, affinity)
    return choose_budget(affinity, host, cgroup_cpu_limit(root, self_cgroup))


def default_worker_count() -> tuple[int, str]:
    """gunicorn's advice, 2 × CPUs + 1, but over the CPUs we may actually use."""
    budget = cpu_budget()
    return 2 * budget.count + 1, f"2 x {budget.count} + 1 from the {budget.reason}"
