"""The app's own Prometheus metrics (``prometheus_client``), merged across workers by the master.

Under a preforking server each worker is its own process, so a ``Counter`` the app increments
lives in as many copies as there are workers; ``prometheus_client``'s multiprocess mode keeps
each process's values in files of one directory (``PROMETHEUS_MULTIPROC_DIR``) and sums them
when asked. Doing that by hand takes a directory cleaned at start, the variable set before the
app is imported, ``mark_process_dead`` in ``child_exit`` and an endpoint of one's own. With
``app_metrics`` on (the default) and ``prometheus_client`` importable, the master does it all:

- at start, before the app is imported anywhere (``preload_app`` included), it creates a private
  directory and sets ``PROMETHEUS_MULTIPROC_DIR`` (a directory already set in the environment is
  used instead, and its stale ``*.db`` files are removed first);
- when it reaps a worker — crashed, recycled, replaced by a HUP, retired — it removes that
  process's live gauge files (``multiprocess_mode`` ``all`` and the ``live*`` modes), so its
  gauges vanish; its counters, histograms and summaries stay counted, so totals never drop;
- ``/metrics`` on ``stats_bind`` serves the merged metrics after forkserve's own;
- at exit it removes the directory it created (never one it was given); one left behind by a
  master that was killed is removed by the next master that starts.

A USR2 successor makes a directory of its own (its counters start from zero, which Prometheus
reads as a counter reset).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import tempfile
from typing import Any

from forkserve.process.logs import error_log

ENV = "PROMETHEUS_MULTIPROC_DIR"
OWNED_ENV = "FORKSERVE_APP_METRICS_DIR"  # the directory this server made (not a user's)
_LIVE_GAUGES = ("gauge_all_{pid}.db", "gauge_live*_{pid}.db")
PREFIX = "forkserve-app-metrics-"  # + the master's pid: a directory whose master is gone is an orphan


def _remove_orphans() -> None:
    """Remove the directories of masters that died without cleaning up (SIGKILL, a crash)."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{PREFIX}*-*")):
        pid = os.path.basename(path)[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(path, ignore_errors=True)


class AppMetrics:
    """The multiprocess directory of one master, and its merged exposition."""

    def __init__(self, directory: str, owned: bool) -> None:
        self.directory = directory
        self.owned = owned

    @classmethod
    def start(cls, config: Any) -> AppMetrics | None:
        """Set up the directory and the environment (None when off or prometheus_client is absent)."""
        if not config.app_metrics or importlib.util.find_spec("prometheus_client") is None:
            return None
        given = os.environ.get(ENV) or os.environ.get(ENV.lower())
        if given and given != os.environ.get(OWNED_ENV):
            try:
                os.makedirs(given, exist_ok=True)
                for stale in glob.glob(os.path.join(given, "*.db")):
                    os.unlink(stale)
            except OSError as error:
                error_log.warning("app metrics: cannot use %s=%s: %s; app metrics are off", ENV, given, error)
                return None
            os.environ[ENV] = given
            error_log.info("app metrics: prometheus_client multiprocess mode in %s (from the environment)", given)
            return cls(given, owned=False)
        _remove_orphans()
        directory = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
        os.environ[ENV] = os.environ[OWNED_ENV] = directory
        error_log.info("app metrics: prometheus_client multiprocess mode in %s", directory)
        return cls(directory, owned=True)

    def process_dead(self, pid: int) -> None:
        """A worker is gone: its live gauges go (what ``mark_process_dead`` does, and mode 'all')."""
        for pattern in _LIVE_GAUGES:
            for path in glob.glob(os.path.join(self.directory, pattern.format(pid=pid))):
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def render(self) -> str:
        """The app's metrics merged over every process's files, in Prometheus text format."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)
        return generate_latest(registry).decode("utf-8")

    def close(self) -> None:
        """The master exits: remove the directory it created."""
        if self.owned:
            shutil.rmtree(self.directory, ignore_errors=True)
