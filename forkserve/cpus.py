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


@dataclass(frozen=True)
class CpuBudget:
    """The usable CPU count and a phrase saying where it came from (logged at start)."""

    count: int
    reason: str


def _own_cgroup_dirs(root: Path) -> list[Path]:
    """The cgroup directories of this process, innermost first, for v2 and v1 'cpu' hierarchies."""
    candidates: list[Path] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
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


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The tightest CPU quota on this process's cgroup path, in CPUs, or None."""
    limits = [limit for directory in _own_cgroup_dirs(root) if (limit := _quota_of(directory)) is not None]
    return min(limits) if limits else None


def cpu_budget(root: Path = CGROUP_ROOT) -> CpuBudget:
    """Usable CPUs: min(affinity mask, cgroup quota rounded up), at least 1."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    host = os.cpu_count() or affinity
    quota = cgroup_cpu_limit(root)
    if quota is not None and math.ceil(quota) < affinity:
        return CpuBudget(max(1, math.ceil(quota)), f"cgroup CPU quota of {quota:g} CPUs")
    if affinity < host:
        return CpuBudget(affinity, f"CPU affinity mask of {affinity} of {host} CPUs")
    return CpuBudget(affinity, f"{affinity} CPUs")


def default_worker_count() -> tuple[int, str]:
    """gunicorn's advice, 2 × CPUs + 1, but over the CPUs we may actually use."""
    budget = cpu_budget()
    return 2 * budget.count + 1, f"2 x {budget.count} + 1 from the {budget.reason}"
