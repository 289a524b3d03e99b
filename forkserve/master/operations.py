"""What the master does for operators beside supervision, gathered so the arbiter calls one object.

Once per loop turn (:meth:`Operations.tick`, at most once a second for the measured parts) it
measures the fleet's load (:mod:`forkserve.master.load`), sends the master's StatsD gauges and
restart counters, and lets the adaptive worker count (:mod:`forkserve.master.adaptive`) decide;
it owns the control socket (:mod:`forkserve.master.control`) and the app's Prometheus
multiprocess directory (:mod:`forkserve.stats.appmetrics`). Each part is off unless its setting
turns it on, and none of them can stop supervision: a failure is logged and the part carries on
or stops alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forkserve.master import stacks
from forkserve.master.adaptive import Adaptive
from forkserve.master.load import Load, measure
from forkserve.process import statsd
from forkserve.process.logs import error_log
from forkserve.stats.appmetrics import AppMetrics

if TYPE_CHECKING:
    from forkserve.master.control import ControlServer

# The arbiter (which imports this module) and its worker records, as this module sees them.
Arbiter = Any
WorkerRecord = Any

MEASURE_EVERY = 1.0  # seconds between two load measurements


class Operations:
    """StatsD gauges, the adaptive fleet, the control socket and the app's metrics, for one master."""

    def __init__(self, arbiter: Arbiter) -> None:
        self.arbiter = arbiter
        self.statsd: statsd.StatsdClient | None = None
        self.adaptive = Adaptive(arbiter)
        self.control: ControlServer | None = None
        self.app_metrics: AppMetrics | None = None
        self.load = Load()
        self.measured_at = 0.0
        self.restarts_sent: dict[str, int] = {}

    def before_app(self) -> None:
        """Before the app can be imported anywhere (preload, or the first fork): the app's
        Prometheus directory goes into the environment."""
        self.app_metrics = self.arbiter.telemetry.app_metrics = AppMetrics.start(self.arbiter.config)

    def started(self) -> None:
        """Sockets bound, before the first worker: open the control socket, set up StatsD."""
        config = self.arbiter.config
        self.configure()
        stacks.ignore_in_master()
        if not config.control_socket_disable:
            from forkserve.master.control import open_control_server

            self.control = open_control_server(self.arbiter)

    def configure(self) -> None:
        """(Again after a HUP:) the StatsD client and the adaptive limits of the current settings."""
        config = self.arbiter.config
        if self.statsd is not None:
            self.statsd.close()
        self.statsd = statsd.client_for(config)
        self.restarts_sent = dict(self.arbiter.telemetry.restarts)
        self.adaptive.configure(config)

    def tick(self, now: float) -> None:
        """One loop turn: measure once a second; report and adapt on a new measurement."""
        if self.arbiter.config is not self.adaptive.config:
            self.configure()  # a HUP (or its abort) swapped the settings
        if self.control is not None:
            self.control.tick(now)
        if now - self.measured_at < MEASURE_EVERY or self.arbiter.scoreboard is None:
            return
        self.measured_at = now
        fleet = self.arbiter.fleet
        self.load = measure(self.arbiter.scoreboard,
                            [(record.slot, record.thread_slots) for record in fleet.serving()],
                            self.arbiter.listeners)
        try:
            self.adaptive.decide(self.load, now)
        except Exception:  # noqa: BLE001 -- a scaling bug must not stop supervision
            error_log.exception("adaptive worker count failed; the fleet stays as it is")
        if self.statsd is not None:
            self._send_gauges(self.load)

    def _send_gauges(self, load: Load) -> None:
        assert self.statsd is not None
        client, config = self.statsd, self.arbiter.config
        lines = [
            client.gauge("gunicorn.workers", len(self.arbiter.fleet.serving())),
            client.gauge("forkserve.workers.busy", load.busy),
            client.gauge("forkserve.workers.target", self.arbiter.target_workers),
            client.gauge("forkserve.queue_depth", load.listen_queue),
            client.gauge("forkserve.requests.waiting", load.waiting),
        ]
        if config.enable_backlog_metric:
            lines.append(client.histogram("gunicorn.backlog", load.listen_queue))
        for reason, count in self.arbiter.telemetry.restarts.items():
            sent = self.restarts_sent.get(reason, 0)
            if count > sent:
                lines.append(client.counter(f"forkserve.restarts.{reason}", count - sent))
                self.restarts_sent[reason] = count
        client.send(lines)

    def next_wakeup(self, now: float) -> float | None:
        """Seconds until a part needs the loop (a pending ``stacks`` reply), if any."""
        return self.control.next_wakeup(now) if self.control is not None else None

    def worker_exited(self, record: WorkerRecord) -> None:
        """A worker was reaped: its live gauges in the app's metrics go."""
        if self.app_metrics is not None:
            self.app_metrics.process_dead(record.pid)
        if self.control is not None:
            self.control.worker_exited(record)

    def close(self) -> None:
        """The master exits: close the control socket, remove the app's metrics directory."""
        if self.control is not None:
            self.control.close()
        if self.app_metrics is not None:
            self.app_metrics.close()
        if self.statsd is not None:
            self.statsd.close()
