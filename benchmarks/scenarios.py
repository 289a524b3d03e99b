"""What the benchmark measures: one entry per workload, the same for every server compared.

The list follows issue 3's targets. Hello-world is measured four ways because each says
something different: with ``Connection: close`` (every request pays for a new connection — the
only mode gunicorn's sync worker has), keep-alive at ``--connections`` clients (more clients than
workers, so forkserve keeps a connection open only while nobody else waits), keep-alive with one
client per worker (how the project judges keep-alive throughput), and at 64 clients for the
latency tail under a queue.

The scenarios with misbehaving clients (stalled half-heads, slow readers, idle keep-alive
connections) run the hello keep-alive load with and without those clients beside it, and judge
each server against its own undisturbed figures: what they measure is how much of a server a few
bad clients can take, not how fast it is. ``idle-memory`` measures a worker's memory per idle
keep-alive connection and runs no wrk at all.
"""

from __future__ import annotations

from dataclasses import dataclass

HELLO_APP = "benchmarks.apps.bench_apps:hello"
DOWNLOAD_APP = "benchmarks.apps.bench_apps:download"
UPLOAD_APP = "benchmarks.apps.bench_apps:upload"
HELLO_AND_DOWNLOAD_APP = "benchmarks.apps.bench_apps:hello_and_download"
DEMO_APP = "demo.wsgi:application"
UPLOAD_BYTES = 10 * 1024 * 1024

# What a scenario measures.
PLAIN = "plain"  # wrk alone: throughput, latency, CPU and memory
DISTURBED = "disturbed"  # the hello load with and without misbehaving clients beside it
MEMORY = "memory"  # worker memory per idle keep-alive connection (1 worker, no wrk)

# The misbehaving clients of a DISTURBED (or MEMORY) scenario: benchmarks/slowclients.py.
STALLED = "stalled"  # send half a request head, then nothing
SLOW_READERS = "slow-readers"  # download 1 MiB at 100 KB/s
IDLE = "idle"  # one request answered, then idle on the keep-alive connection

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
    mode: str = PLAIN
    disturbance: str = ""  # STALLED, SLOW_READERS or IDLE (DISTURBED and MEMORY scenarios)
    extra_clients: int = 0  # how many of those

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
    Scenario("slow-clients", "hello keep-alive load beside 200 connections that each sent half a "
             "request head and stall (replaced when the server closes one)", HELLO_AND_DOWNLOAD_APP,
             mode=DISTURBED, disturbance=STALLED, extra_clients=200),
    Scenario("slow-readers", "hello keep-alive load beside 20 clients each downloading 1 MiB at "
             "100 KB/s through a 32 KiB receive window, over and over", HELLO_AND_DOWNLOAD_APP,
             mode=DISTURBED, disturbance=SLOW_READERS, extra_clients=20),
    Scenario("idle-keepalive", "hello keep-alive load beside 500 keep-alive connections that each "
             "got one answer and then idle", HELLO_AND_DOWNLOAD_APP, mode=DISTURBED, disturbance=IDLE,
             extra_clients=500),
    Scenario("idle-memory", "worker RSS growth per idle keep-alive connection: 1 worker, 1,000 "
             "connections that each got one answer and then idle", HELLO_APP, mode=MEMORY,
             disturbance=IDLE, extra_clients=1000),
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
