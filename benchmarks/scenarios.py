"""What the benchmark measures: one entry per workload, and the servers compared on it.

The main list follows issue 3's targets and runs every server kind with the same arguments:
forkserve, gunicorn's sync worker, and uWSGI and granian when installed (issue 17 compares
forkserve with them on three of these: keep-alive with 2 and with 64 clients, and
``Connection: close`` with 8; the names ``hello-keepalive-c2``, ``hello-keepalive-c64`` and
``hello-close-c8`` select exactly those). The list follows issue 3's targets. Hello-world is measured four ways because each says
something different: with ``Connection: close`` (every request pays for a new connection — the
only mode gunicorn's sync worker has), keep-alive at ``--connections`` clients (more clients than
workers, so forkserve keeps a connection open only while nobody else waits), keep-alive with one
client per worker (how the project judges keep-alive throughput), and at 64 clients for the
latency tail under a queue.

The scenarios with misbehaving clients (stalled half-heads, slow readers, idle keep-alive
connections) run the hello keep-alive load with and without those clients beside it, and judge
each server against its own undisturbed figures: what they measure is how much of a server a few
bad clients can take, not how fast it is. ``idle-memory`` measures a worker's memory per idle
keep-alive connection and runs no wrk at all. Those two kinds compare forkserve with gunicorn
only.

The app-thread scenarios (issue 13) carry their own servers: forkserve ``--threads 8`` against
gunicorn's gthread worker with 8 threads on an app that waits 50 ms per request; the same
forkserve against 8 times as many sync workers (what the threads save in memory); and forkserve
``--threads 4`` against ``--threads 1`` on hello world (what handing each request to a thread
costs under the GIL).
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.servers import (
    FORKSERVE,
    GRANIAN,
    GUNICORN,
    UWSGI,
    UWSGI_CLOSE,
    UWSGI_KEEPALIVE,
    ServerSpec,
)
from benchmarks.transports import TLS, TLS_SERVER_ARGS

HELLO_APP = "benchmarks.apps.bench_apps:hello"
DOWNLOAD_APP = "benchmarks.apps.bench_apps:download"
UPLOAD_APP = "benchmarks.apps.bench_apps:upload"
HELLO_AND_DOWNLOAD_APP = "benchmarks.apps.bench_apps:hello_and_download"
DEMO_APP = "demo.wsgi:application"
IO_APP = "benchmarks.apps.bench_apps:io_bound"
UPLOAD_BYTES = 10 * 1024 * 1024

# What a scenario measures.
PLAIN = "plain"  # wrk alone: throughput, latency, CPU and memory
DISTURBED = "disturbed"  # the hello load with and without misbehaving clients beside it
MEMORY = "memory"  # worker memory per idle keep-alive connection (1 worker, no wrk)

# The misbehaving clients of a DISTURBED (or MEMORY) scenario: benchmarks/slowclients.py.
STALLED = "stalled"  # send half a request head, then nothing
SLOW_READERS = "slow-readers"  # download 1 MiB at 100 KB/s
IDLE = "idle"  # one request answered, then idle on the keep-alive connection

# Where a scenario's figures go in the report.
MAIN = "main"  # the Results table, issue 3's and issue 17's targets
THREADS = "threads"  # the app-thread comparisons (issue 13)
TRANSPORT = "transport"  # TLS in the server (issue 14)

# The servers compared. The candidate (forkserve) comes first: ratios are it over each other.
SYNC = ServerSpec(GUNICORN, ("--worker-class", "sync"))
EVERY_KIND = (ServerSpec(FORKSERVE), SYNC, ServerSpec(UWSGI, UWSGI_KEEPALIVE), ServerSpec(GRANIAN))
# uWSGI's --http11-socket ignores a client's "Connection: close": Connection: close scenarios
# run its --http-socket (servers.py says why).
EVERY_KIND_CLOSING = (ServerSpec(FORKSERVE), SYNC, ServerSpec(UWSGI, UWSGI_CLOSE), ServerSpec(GRANIAN))
# Issue 17's goal names uWSGI's --http-socket, which closes every connection after its response:
# the keep-alive scenarios it names run that one too, beside --http11-socket, labelled apart.
UWSGI_HTTP_SOCKET = ServerSpec(UWSGI, UWSGI_CLOSE, label="uwsgi --http-socket")
EVERY_KIND_AND_HTTP_SOCKET = (*EVERY_KIND, UWSGI_HTTP_SOCKET)
FORKSERVE_AND_GUNICORN = (ServerSpec(FORKSERVE), SYNC)
APP_THREADS = 8  # issue 13: 2 workers x 8 threads
THREADED = ServerSpec(FORKSERVE, ("--threads", str(APP_THREADS)), label=f"forkserve {{workers}}×{APP_THREADS} threads")
GTHREAD = ServerSpec(GUNICORN, ("--worker-class", "gthread", "--threads", str(APP_THREADS)),
                     label=f"gunicorn gthread {{workers}}×{APP_THREADS} threads")
# As many sync workers as the threaded server has app threads in all.
MANY_SYNC = ServerSpec(FORKSERVE, worker_factor=APP_THREADS, label="forkserve {workers} sync workers")
HELLO_THREADS = 4
FOUR_THREADS = ServerSpec(FORKSERVE, ("--threads", str(HELLO_THREADS)), label=f"forkserve {HELLO_THREADS} threads")
# --threads 1 is the default: no argument, so it is the very server the main hello scenarios use.
ONE_THREAD = ServerSpec(FORKSERVE, label="forkserve 1 thread")

# TLS terminated by the server itself, with the same certificate (ECDSA P-256, made per run).
TLS_SERVERS = (ServerSpec(FORKSERVE, TLS_SERVER_ARGS, label="forkserve TLS", transport=TLS),
               ServerSpec(GUNICORN, ("--worker-class", "sync", *TLS_SERVER_ARGS), label="gunicorn TLS",
                          transport=TLS))

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
    servers: tuple[ServerSpec, ...] = EVERY_KIND  # the first is the candidate
    section: str = MAIN
    aliases: tuple[str, ...] = ()  # other names --scenario accepts for it

    def connections(self, default: int, workers: int) -> int:
        """The wrk ``-c`` value for this scenario under the runner's settings."""
        if self.clients == DEFAULT_CLIENTS:
            return default
        if self.clients == ONE_PER_WORKER:
            return workers
        return int(self.clients)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("hello-close", "hello world, Connection: close (a new connection per request)",
             HELLO_APP, script_args=("close",), aliases=("hello-close-c8",), servers=EVERY_KIND_CLOSING),
    Scenario("hello-keepalive", "hello world, keep-alive requested, --connections clients", HELLO_APP),
    Scenario("hello-keepalive-1perworker", "hello world, keep-alive, one client per worker",
             HELLO_APP, clients=ONE_PER_WORKER, aliases=("hello-keepalive-c2",), servers=EVERY_KIND_AND_HTTP_SOCKET),
    Scenario("json", "the demo app's JSON view (routing, middleware, json.dumps)", DEMO_APP, "/json"),
    Scenario("download-1mb", "a fixed 1 MiB file through wsgi.file_wrapper", DOWNLOAD_APP),
    Scenario("upload-10mb", "a 10 MiB POST body, read by the app and discarded", UPLOAD_APP,
             script_args=(f"upload={UPLOAD_BYTES}",), timeout="30s"),
    Scenario("hello-c64", "hello world at 64 clients: the latency tail with a queue", HELLO_APP,
             clients=64, aliases=("hello-keepalive-c64",), servers=EVERY_KIND_AND_HTTP_SOCKET),
    Scenario("hello-threads4-keepalive", f"hello world, keep-alive, one client per worker: forkserve "
             f"--threads {HELLO_THREADS} against --threads 1", HELLO_APP, clients=ONE_PER_WORKER,
             servers=(FOUR_THREADS, ONE_THREAD), section=THREADS),
    Scenario("hello-threads4-close", f"hello world, Connection: close: forkserve --threads "
             f"{HELLO_THREADS} against --threads 1", HELLO_APP, script_args=("close",),
             servers=(FOUR_THREADS, ONE_THREAD), section=THREADS),
    Scenario("io-bound", f"an app that waits 50 ms per request, 64 clients: forkserve --threads "
             f"{APP_THREADS} against gunicorn's gthread worker with {APP_THREADS} threads", IO_APP,
             clients=64, servers=(THREADED, GTHREAD), section=THREADS),
    Scenario("io-bound-16sync", f"the io-bound load: forkserve --threads {APP_THREADS} against "
             f"{APP_THREADS}× as many sync workers (as many as it has app threads)", IO_APP,
             clients=64, servers=(THREADED, MANY_SYNC), section=THREADS),
    Scenario("tls-keepalive", "hello world over TLS, keep-alive, one client per worker: forkserve "
             "against gunicorn, both terminating TLS themselves", HELLO_APP, clients=ONE_PER_WORKER,
             servers=TLS_SERVERS, section=TRANSPORT),
    Scenario("tls-close", "hello world over TLS, Connection: close: a full handshake per request",
             HELLO_APP, script_args=("close",), servers=TLS_SERVERS, section=TRANSPORT),
    Scenario("slow-clients", "hello keep-alive load beside 200 connections that each sent half a "
             "request head and stall (replaced when the server closes one)", HELLO_AND_DOWNLOAD_APP,
             mode=DISTURBED, disturbance=STALLED, extra_clients=200, servers=FORKSERVE_AND_GUNICORN),
    Scenario("slow-readers", "hello keep-alive load beside 20 clients each downloading 1 MiB at "
             "100 KB/s through a 32 KiB receive window, over and over", HELLO_AND_DOWNLOAD_APP,
             mode=DISTURBED, disturbance=SLOW_READERS, extra_clients=20, servers=FORKSERVE_AND_GUNICORN),
    Scenario("idle-keepalive", "hello keep-alive load beside 500 keep-alive connections that each "
             "got one answer and then idle", HELLO_AND_DOWNLOAD_APP, mode=DISTURBED, disturbance=IDLE,
             extra_clients=500, servers=FORKSERVE_AND_GUNICORN),
    Scenario("idle-memory", "worker RSS growth per idle keep-alive connection: 1 worker, 1,000 "
             "connections that each got one answer and then idle", HELLO_APP, mode=MEMORY,
             disturbance=IDLE, extra_clients=1000, servers=FORKSERVE_AND_GUNICORN),
)


def select(names: list[str] | None) -> list[Scenario]:
    """The scenarios named (all when ``names`` is empty), in the canonical order.

    Raises ValueError naming the unknown ones, with the list of valid names.
    """
    if not names:
        return list(SCENARIOS)
    known = {alias: scenario.name for scenario in SCENARIOS for alias in (scenario.name, *scenario.aliases)}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    wanted = {known[name] for name in names}
    return [scenario for scenario in SCENARIOS if scenario.name in wanted]
