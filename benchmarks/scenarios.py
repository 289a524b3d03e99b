"""What the benchmark measures: one entry per workload, the same for every server compared.

The list follows issue 3's targets. Hello-world is measured four ways because each says
something different: with ``Connection: close`` (every request pays for a new connection — the
only mode gunicorn's sync worker has), keep-alive at ``--connections`` clients (more clients than
workers, so forkserve keeps a connection open only while nobody else waits), keep-alive with one
client per worker (how the project judges keep-alive throughput), and at 64 clients for the
latency tail under a queue.
"""

from __future__ import annotations

from dataclasses import dataclass

HELLO_APP = "benchmarks.apps.bench_apps:hello"
DOWNLOAD_APP = "benchmarks.apps.bench_apps:download"
UPLOAD_APP = "benchmarks.apps.bench_apps:upload"
DEMO_APP = "demo.wsgi:application"
UPLOAD_BYTES = 10 * 1024 * 1024

# How many wrk connections a scenario opens.
DEFAULT_CLIENTS = "default"  # the runner's --connections (8 by default)
ONE_PER_WORKER = "workers"  # as many as there are workers


@dataclass(frozen=True)
class Scenario:
    """One workload: which app, which path, how many clients, what each request looks like."""

    name: str
    about: str
    app: str
    path: str = "/"
    clients: str | int = DEFAULT_CLIENTS
    script_args: tuple[str, ...] = ()
    timeout: str = "5s"

    def connections(self, default: int, workers: int) -> int:
        """The wrk ``-c`` value for this scenario under the runner's settings."""
        if self.clients == DEFAULT_CLIENTS:
            return default
        if self.clients == ONE_PER_WORKER:
            return workers
        return int(self.clients)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("hello-close", "hello world, Connection: close (a new connection per request)",
             HELLO_APP, script_args=("close",)),
    Scenario("hello-keepalive", "hello world, keep-alive requested, --connections clients", HELLO_APP),
    Scenario("hello-keepalive-1perworker", "hello world, keep-alive, one client per worker",
             HELLO_APP, clients=ONE_PER_WORKER),
    Scenario("json", "the demo app's JSON view (routing, middleware, json.dumps)", DEMO_APP, "/json"),
    Scenario("download-1mb", "a fixed 1 MiB file through wsgi.file_wrapper", DOWNLOAD_APP),
    Scenario("upload-10mb", "a 10 MiB POST body, read by the app and discarded", UPLOAD_APP,
             script_args=(f"upload={UPLOAD_BYTES}",), timeout="30s"),
    Scenario("hello-c64", "hello world at 64 clients: the latency tail with a queue", HELLO_APP,
             clients=64),
)


def select(names: list[str] | None) -> list[Scenario]:
    """The scenarios named (all when ``names`` is empty), in the canonical order.

    Raises ValueError naming the unknown ones, with the list of valid names.
    """
    if not names:
        return list(SCENARIOS)
    known = {scenario.name for scenario in SCENARIOS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    wanted = set(names)
    return [scenario for scenario in SCENARIOS if scenario.name in wanted]
