"""Putting a worker's serving parts together: environ builders, request runners, app threads,
TLS, and the loop they run in. Built once per worker, after the app is loaded.
"""

from __future__ import annotations

from typing import Any

from forkserve.http.accesslog import after_request_hook
from forkserve.http.connection import RequestRunner
from forkserve.http.environ import EnvironBuilder, ErrorStream
from forkserve.http.head import HeadLimits
from forkserve.http.proxy import ProxyTrust
from forkserve.http.requestid import before_request_hook
from forkserve.http.uwsgi import UwsgiEnvironBuilder
from forkserve.process import logs, statsd
from forkserve.process.scoreboard import SlotWriter
from forkserve.worker.conn import FrontSettings
from forkserve.worker.front import Front
from forkserve.worker.threads import AppThreads
from forkserve.worker.tls import worker_context


def build_front(worker: Any, output_cap: int) -> Front:
    """The worker's loop with everything it needs (``worker`` is the Worker: its config, slots,
    listeners, hooks)."""
    config = worker.config
    proxy = ProxyTrust(config.forwarded_allow_ips, config.secure_scheme_headers)
    errors = ErrorStream()
    tls = worker_context(config) if config.certfile else None
    builder_class = UwsgiEnvironBuilder if config.protocol == "uwsgi" else EnvironBuilder
    builders = {
        listener.fileno(): builder_class(listener, proxy, config.header_map, errors,
                                         scheme="https" if tls is not None else "http",
                                         multithread=bool(worker.thread_slots))
        for listener in worker.listeners
    }
    wants_after = config.hook("post_request") is not None or worker.memory_limit > 0
    statsd_client = statsd.client_for(config)  # gunicorn's per-request StatsD metrics, when set

    def runner(slot: SlotWriter) -> RequestRunner:
        return RequestRunner(
            app=worker.app,
            slot=slot,
            keepalive=config.keepalive > 0,
            use_sendfile=config.sendfile,
            should_stop=worker.should_stop,
            # Each callback is installed only when something needs it: an unconfigured request
            # pays nothing. The request id comes first, so pre_request hooks can see it.
            before_request=before_request_hook(
                config.request_id_header, proxy,
                then=worker.before_request if config.hook("pre_request") else None,
            ),
            after_request=after_request_hook(
                config.access_log_format, logs.access_log,
                then=statsd.after_request_hook(statsd_client, then=worker.after_request if wants_after else None),
            ),
            max_queue_time=config.max_queue_time,
        )

    pool = None
    if worker.thread_slots:
        slots = [worker.scoreboard.writer(index) for index in worker.thread_slots]
        pool = AppThreads([runner(slot) for slot in slots], slots)
    settings = FrontSettings(
        limits=HeadLimits.from_config(config),
        header_timeout=config.header_timeout,
        body_timeout=config.body_timeout,
        keepalive=config.keepalive,
        worker_connections=config.worker_connections,
        request_buffering=config.request_buffering,
        buffer_memory=config.request_buffer_size,
        tmp_dir=config.worker_tmp_dir,
        body_limit=config.limit_request_body,
        output_cap=output_cap,
        tls=tls,
        proxy_protocol=config.proxy_protocol,
        proxy_trust=ProxyTrust(config.proxy_allow_ips, {}),
        protocol=config.protocol,
        uwsgi_trust=ProxyTrust(config.uwsgi_allow_ips, {}),
    )
    listeners = {listener.fileno(): listener.sock for listener in worker.listeners}
    return Front(settings, listeners, builders, runner(worker.slot), worker, worker.wakeup_read,
                 config.graceful_timeout, pool)
