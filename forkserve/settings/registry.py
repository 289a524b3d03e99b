"""The settings registry: the one source of truth for every setting.

Each :class:`Setting` names the setting, its command-line flags, its validator, its default, its
help text and its section. The argparse CLI, ``forkserve.conf.py``, ``FORKSERVE_CMD_ARGS``,
``--print-config`` and the settings reference in README.md are all generated from the table below,
so a setting cannot exist in one place and be missing from another.

Precedence, lowest first: defaults < ``WEB_CONCURRENCY``/``PORT`` < config file <
``FORKSERVE_CMD_ARGS`` (else gunicorn's ``GUNICORN_CMD_ARGS``) < command line. gunicorn's names
for settings forkserve lacks are answered from :mod:`forkserve.settings.gunicorn_compat`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forkserve.settings import validators as v
from forkserve.settings.cpus import default_worker_count
from forkserve.settings.gunicorn_compat import gunicorn_spelling, http_parser, worker_class

SECTIONS = (
    "Config",
    "Server socket",
    "Workers",
    "HTTP",
    "TLS",
    "Proxy",
    "Logging",
    "Process",
    "Stats",
    "Development",
    "Hooks",
)


@dataclass(frozen=True)
class Computed:
    """A default worked out at start-up (e.g. from the CPU quota), described for the docs."""

    describe: str
    compute: Callable[[], tuple[Any, str]]


@dataclass(frozen=True)
class Setting:
    """One setting. ``kind`` is 'value', 'flag' (boolean switch), 'list' (flag may repeat) or
    'optional' (the flag's value may be left out: then it is ``const``)."""

    name: str
    section: str
    default: Any
    validator: v.Validator
    help: str
    flags: tuple[str, ...] = ()
    metavar: str = "VALUE"
    kind: str = "value"
    pending: str | None = None
    hook_arity: int | None = None
    const: Any = None  # kind 'optional': the value of the flag given without one

    @property
    def help_text(self) -> str:
        """The help text, marked when the behaviour behind the setting has not landed yet."""
        if self.pending:
            return f"{self.help} [not implemented yet: {self.pending}; setting it only warns]"
        return self.help

    def default_text(self) -> str:
        """How the default is shown in --help and the docs."""
        if isinstance(self.default, Computed):
            return self.default.describe
        return format_value(self.default)


def format_value(value: Any) -> str:
    """A value as it would be written in forkserve.conf.py."""
    if callable(value):
        return getattr(value, "__qualname__", repr(value))
    return repr(value)


HOOKS: dict[str, tuple[int, str]] = {
    "on_starting": (1, "on_starting(server): in the master, before it binds sockets and forks."),
    "on_reload": (1, "on_reload(server): in the master, when HUP re-reads the configuration."),
    "when_ready": (1, "when_ready(server): in the master, once the sockets are bound and workers forked."),
    "pre_fork": (2, "pre_fork(server, worker): in the master, just before a worker is forked."),
    "post_fork": (2, "post_fork(server, worker): in the worker, just after fork."),
    "post_worker_init": (1, "post_worker_init(worker): in the worker, once the app is loaded."),
    "worker_int": (1, "worker_int(worker): in the worker, when INT or QUIT makes it exit at once."),
    "worker_abort": (1, "worker_abort(worker): in the worker, when the master aborts it for a timeout."),
    "pre_exec": (1, "pre_exec(server): in the master, before a USR2 upgrade execs the new master."),
    "pre_request": (2, "pre_request(worker, req): in the worker, before the app is called."),
    "post_request": (4, ("post_request(worker, req, environ, resp): in the worker, after the response "
                         "(as in gunicorn, a function of (worker, req) or (worker, req, environ) works too).")),
    "child_exit": (2, "child_exit(server, worker): in the master, after a worker has been reaped."),
    "worker_exit": (2, "worker_exit(server, worker): in the worker, just before it exits."),
    "nworkers_changed": (3, "nworkers_changed(server, new_value, old_value): the worker count changed."),
    "on_exit": (1, "on_exit(server): in the master, just before it exits."),
    "ssl_context": (2, ("ssl_context(config, default_ssl_context_factory): in each worker, returns the "
                       "SSLContext to serve TLS with (call the factory for forkserve's own).")),
}

DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


def _settings() -> list[Setting]:
    s = Setting
    table = [
        # -- Config
        s("config", "Config", None, v.optional_string,
          "The Python config file to load (gunicorn's python:MODULE and file:PATH work too). Default: "
          "./forkserve.conf.py when it exists, else ./gunicorn.conf.py when that does.",
          ("-c", "--config"), "PATH"),
        s("wsgi_app", "Config", None, v.optional_string,
          "The WSGI application, as module:attr (attr defaults to 'application') or module:factory().",
          metavar="APP"),
        s("check_config", "Config", False, v.boolean,
          "Load the configuration and the app, report, and exit 0 (fine) or 1 (not).",
          ("--check-config",), kind="flag"),
        s("print_config", "Config", False, v.boolean,
          "Print every resolved setting with where its value came from, and exit.",
          ("--print-config",), kind="flag"),
        # -- Server socket
        s("bind", "Server socket", ["127.0.0.1:8000"], v.string_list,
          "Address to listen on: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N. Repeat for several. "
          "Default 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set.",
          ("-b", "--bind"), "ADDRESS", kind="list"),
        s("backlog", "Server socket", 2048, v.integer(1),
          "Listen queue length for each bound socket (capped by net.core.somaxconn).",
          ("--backlog",), "INT"),
        s("reuse_port", "Server socket", False, v.boolean,
          "Set SO_REUSEPORT on TCP sockets.", ("--reuse-port",), kind="flag"),
        # -- Workers
        s("workers", "Workers", Computed("2 x usable CPUs + 1 (cgroup quota and affinity aware)",
                                         default_worker_count),
          v.integer(1), "Number of worker processes. Also read from WEB_CONCURRENCY.",
          ("-w", "--workers"), "INT"),
        s("worker_class", "Workers", "sync", worker_class,
          "Worker type, gunicorn's names: 'sync' and 'gthread' (or their gunicorn class paths) are the "
          "same forkserve worker (an I/O loop per process, the app run by 'threads' threads); other "
          "worker classes are refused, with what to use instead.",
          ("-k", "--worker-class"), "CLASS"),
        s("threads", "Workers", 1, v.integer(1),
          "Threads running the app in each worker. 1: the app runs on the worker's loop thread, "
          "one request at a time. N > 1: the loop hands complete requests to a pool of N threads "
          "(for apps that wait on databases or APIs).", ("--threads",), "INT"),
        s("timeout", "Workers", 30.0, v.number(0),
          "Seconds a worker may spend in the app on one request before the master dumps every "
          "thread's stack to the error log and replaces it. A worker that shows no heartbeat for "
          "longer than max(timeout, keepalive + header_timeout + 2) + 2 s while booting or idle "
          "(deadlocked) is treated the same. 0 disables both.", ("-t", "--timeout"), "SECONDS"),
        s("graceful_timeout", "Workers", 30.0, v.number(0),
          "Seconds workers get to finish in-flight requests (and, on TERM, the connections queued "
          "in the listen backlog) on TERM, reload or recycling before SIGKILL.",
          ("--graceful-timeout",), "SECONDS"),
        s("keepalive", "Workers", 2.0, v.number(0),
          "Seconds an idle keep-alive connection is held (it costs the worker a selector entry, "
          "not its time). 0 closes after every response.", ("--keep-alive",), "SECONDS"),
        s("worker_connections", "Workers", 1000, v.integer(1),
          "Most connections one worker holds at once (reading a request, idle, waiting for the app, "
          "flushing a response); at the limit it stops accepting and the listen queue keeps new "
          "arrivals for its siblings.", ("--worker-connections",), "INT"),
        s("max_requests", "Workers", 0, v.integer(0),
          "A worker serves at most this many requests (plus jitter), a hard limit: it asks for "
          "a replacement a tenth of the budget (at least 10 requests) ahead, and is stopped once "
          "that one is ready; the request that reaches the limit is answered with "
          "Connection: close whether or not it is. 0 disables.", ("--max-requests",), "INT"),
        s("max_requests_jitter", "Workers", 0, v.integer(0),
          "Add a random 0..N to each worker's max_requests so they do not restart together.",
          ("--max-requests-jitter",), "INT"),
        s("max_worker_memory", "Workers", 0, v.integer(0),
          "Replace a worker whose resident memory exceeds this many MB after a request: it finishes "
          "that response, logs its RSS and exits. 0 disables.",
          ("--max-worker-memory",), "MB"),
        s("max_worker_lifetime", "Workers", 0.0, v.number(0),
          "A worker takes no new request after it has lived this many seconds (plus jitter), a "
          "hard deadline; its replacement is started a tenth of the lifetime (at least 10 s) "
          "ahead. 0 disables.",
          ("--max-worker-lifetime",), "SECONDS"),
        s("max_worker_lifetime_jitter", "Workers", 0.0, v.number(0),
          "Add a random 0..N seconds to each worker's max_worker_lifetime.",
          ("--max-worker-lifetime-jitter",), "SECONDS"),
        s("reload_strategy", "Workers", "all", v.choice("all", "rolling"),
          "On HUP: 'all' starts every new worker then stops the old ones; 'rolling' replaces one "
          "worker at a time, each after its replacement is ready.",
          ("--reload-strategy",), "STRATEGY"),
        # -- HTTP
        s("limit_request_line", "HTTP", 4094, v.integer(0),
          "Longest request line in bytes (414 beyond). 0 means the 64 KiB hard cap.",
          ("--limit-request-line",), "BYTES"),
        s("limit_request_fields", "HTTP", 100, v.integer(0),
          "Most header fields in a request (431 beyond). 0 means the hard cap of 32768.",
          ("--limit-request-fields",), "INT"),
        s("limit_request_field_size", "HTTP", 8190, v.integer(0),
          "Longest header field in bytes (431 beyond). 0 means the 64 KiB hard cap.",
          ("--limit-request-field-size",), "BYTES"),
        s("limit_request_body", "HTTP", 1 << 30, v.integer(0),
          "Largest request body in bytes (413 beyond). 0 means unlimited.",
          ("--limit-request-body",), "BYTES"),
        s("header_timeout", "HTTP", 10.0, v.number(0.001),
          "Seconds a client has to send the whole request head before it gets 408 (a connection "
          "that sends nothing at all is closed without a reply).",
          ("--header-timeout",), "SECONDS"),
        s("body_timeout", "HTTP", 30.0, v.number(0.001),
          "Seconds a client may stall while sending the body or reading the response (408 / close).",
          ("--body-timeout",), "SECONDS"),
        s("request_buffering", "HTTP", True, v.boolean,
          "Read each request body completely before calling the app (in memory up to "
          "request_buffer_size, then in a temporary file in worker_tmp_dir), as nginx does, so a "
          "slow upload never holds the worker; --no-request-buffering lets the app read the body "
          "from the socket as it arrives.", ("--request-buffering",), kind="flag"),
        s("request_buffer_size", "HTTP", 65536, v.integer(0),
          "Bytes of a buffered request body kept in memory; a larger body goes to a temporary file.",
          ("--request-buffer-size",), "BYTES"),
        s("worker_tmp_dir", "HTTP", None, v.optional_string,
          "Directory for buffered request bodies larger than request_buffer_size. Default: the "
          "system's temporary directory.", ("--worker-tmp-dir",), "DIR"),
        s("header_map", "HTTP", "drop", v.choice("drop", "refuse", "dangerous"),
          "Header names containing '_': 'drop' them, 'refuse' the request with 400, or 'dangerous'ly "
          "pass them to the app where they collide with '-' names.", ("--header-map",), "POLICY"),
        s("permit_obsolete_folding", "HTTP", False, v.boolean,
          "Accept obsolete line folding in header values instead of answering 400.",
          ("--permit-obsolete-folding",), kind="flag"),
        s("http_parser", "HTTP", "h11", http_parser,
          "What reads ordinary request heads: 'h11' (a one-pass Python fast path), 'httptools' (llhttp, "
          "in C: pip install 'forkserve[fast]'), or 'auto' (httptools when it imports, else h11). "
          "Either way anything unusual goes to h11 with forkserve's stricter checks, which decides.",
          ("--http-parser",), "PARSER"),
        s("sendfile", "HTTP", True, v.boolean_or_none(True),
          "Use os.sendfile for wsgi.file_wrapper responses of regular files; --no-sendfile "
          "iterates the file in blocks instead.",
          ("--sendfile",), kind="flag"),
        s("request_id_header", "HTTP", "X-Request-ID", v.optional_string,
          "Response header echoing the request id (taken from a trusted peer's header of that name "
          "or generated; the app sees it as environ['forkserve.request_id']). Empty to not echo it.",
          ("--request-id-header",), "NAME"),
        # -- TLS (gunicorn's names and meanings)
        s("certfile", "TLS", None, v.optional_string,
          "PEM certificate (chain) file: serve HTTPS on every bound address. HUP makes new workers "
          "load it afresh (certificate renewals); a file that does not load keeps the old workers.",
          ("--certfile",), "FILE"),
        s("keyfile", "TLS", None, v.optional_string,
          "PEM private key file (default: the key in certfile).", ("--keyfile",), "FILE"),
        s("ca_certs", "TLS", None, v.optional_string,
          "PEM file of the certificate authorities client certificates are checked against.",
          ("--ca-certs",), "FILE"),
        s("cert_reqs", "TLS", "none", v.cert_reqs,
          "Client certificates: 'none' (not asked for), 'optional' (checked if sent), 'required' "
          "(mutual TLS; no certificate, no connection). gunicorn's 0/1/2 work too.",
          ("--cert-reqs",), "WHEN"),
        s("ciphers", "TLS", None, v.optional_string,
          "OpenSSL cipher list for TLS 1.2 (default: the ssl module's secure defaults).",
          ("--ciphers",), "CIPHERS"),
        s("do_handshake_on_connect", "TLS", False, v.boolean,
          "Accepted for gunicorn compatibility: the handshake always runs in the worker's loop, "
          "before the request is read, without holding the worker.",
          ("--do-handshake-on-connect",), kind="flag"),
        s("suppress_ragged_eofs", "TLS", True, v.boolean,
          "Treat a client that closes without a TLS close_notify as a normal close (as gunicorn).",
          ("--suppress-ragged-eofs",), kind="flag"),
        # -- Proxy
        s("forwarded_allow_ips", "Proxy", ["127.0.0.1", "::1"], v.address_list,
          "Peers (addresses, CIDRs, or '*') whose forwarding headers are trusted: X-Forwarded-For "
          "and the secure scheme headers, or else (when none of those is sent) the standard "
          "Forwarded (for=, proto=). Unix-socket peers are always trusted; other peers' forwarding "
          "headers are ignored.",
          ("--forwarded-allow-ips",), "IPS"),
        s("proxy_protocol", "Proxy", "off", v.proxy_protocol,
          "Read a PROXY protocol header (HAProxy send-proxy, an AWS NLB) from peers in "
          "proxy_allow_ips: 'v1', 'v2' (required), 'auto' (either, or none), 'off'. The client "
          "address in it becomes REMOTE_ADDR/REMOTE_PORT everywhere.",
          ("--proxy-protocol",), "MODE", kind="optional", const="auto"),
        s("proxy_allow_ips", "Proxy", ["127.0.0.1", "::1"], v.address_list,
          "Peers (addresses, CIDRs, or '*') allowed to send a PROXY header; a header from anyone "
          "else closes the connection. Unix-socket peers are always allowed.",
          ("--proxy-allow-from",), "IPS"),
        s("protocol", "Proxy", "http", v.choice("http", "uwsgi"),
          "What the listeners speak: 'http', or 'uwsgi' for nginx's uwsgi_pass (the packets' "
          "variables become the environ; peers must be in uwsgi_allow_ips).",
          ("--protocol",), "PROTOCOL"),
        s("uwsgi_allow_ips", "Proxy", ["127.0.0.1", "::1"], v.address_list,
          "Peers (addresses, CIDRs, or '*') allowed to send uwsgi packets; unix-socket peers "
          "are always allowed.", ("--uwsgi-allow-from",), "IPS"),
        s("secure_scheme_headers", "Proxy",
          {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"},
          v.header_mapping,
          "Headers (from trusted peers) that mark a request as https, with the value that does. "
          "Contradicting each other they get a 400.",
          ("--secure-scheme-headers",), "NAME=VALUE,..."),
        # -- Logging
        s("accesslog", "Logging", None, v.optional_string,
          "Access log file; '-' is stdout. Off by default.", ("--access-logfile",), "FILE"),
        s("access_log_format", "Logging", DEFAULT_ACCESS_LOG_FORMAT, v.string,
          "Access log line format with gunicorn's atoms (h l u t r s m U q H b B f a T D M L p "
          "{header}i {header}o {var}e), or 'json' for one JSON object per line.",
          ("--access-logformat",), "FORMAT"),
        s("errorlog", "Logging", "-", v.string,
          "Error log file; '-' is stderr.", ("--error-logfile", "--log-file"), "FILE"),
        s("loglevel", "Logging", "info", v.choice("debug", "info", "warning", "error", "critical"),
          "Error log level.", ("--log-level",), "LEVEL"),
        s("logconfig_dict", "Logging", {}, v.mapping,
          "A logging.config.dictConfig dictionary for full control (config file only)."),
        s("capture_output", "Logging", False, v.boolean,
          "Send the processes' stdout and stderr (file descriptors 1 and 2) to the error log.",
          ("--capture-output",), kind="flag"),
        # -- Process
        s("proc_name", "Process", None, v.optional_string,
          "Name in process titles. Default: the app spec.", ("-n", "--name"), "NAME"),
        s("pidfile", "Process", None, v.optional_string,
          "Write the master's pid to this file (atomically); removed on exit. A file naming a live "
          "forkserve master stops the start; a stale one is replaced.", ("-p", "--pid"), "FILE"),
        s("daemon", "Process", False, v.boolean,
          "Detach from the terminal and run in the background, after binding. The command returns "
          "once the workers serve (exit 0) or start-up failed (its exit code).",
          ("-D", "--daemon"), kind="flag"),
        s("user", "Process", None, v.user_or_group,
          "Run workers as this user (name or uid); its primary group unless 'group' is set. Sockets, "
          "pid file and logs stay the master's (log files are handed over so USR1 works).",
          ("-u", "--user"), "USER"),
        s("group", "Process", None, v.user_or_group,
          "Run workers as this group (name or gid).", ("-g", "--group"), "GROUP"),
        s("umask", "Process", 0, v.octal,
          "umask for unix socket files; when set, also for the master and workers (unset, they keep "
          "the inherited umask, and a daemon gets 022).", ("-m", "--umask"), "OCTAL"),
        s("raw_env", "Process", [], v.string_list,
          "Set environment variables: NAME=VALUE. Repeat for several.", ("-e", "--env"), "NAME=VALUE",
          kind="list"),
        s("chdir", "Process", None, v.optional_string,
          "Change to this directory before loading the app.", ("--chdir",), "DIR"),
        s("pythonpath", "Process", None, v.optional_string,
          "Comma-separated directories to put first on sys.path.", ("--pythonpath",), "DIRS"),
        s("preload_app", "Process", False, v.boolean,
          "Import the app in the master before forking (faster start, copy-on-write memory).",
          ("--preload",), kind="flag"),
        s("shutdown_delay", "Process", 0.0, v.number(0),
          "Seconds to drain before a TERM shutdown: the master fails its readiness check at once "
          "(/readyz answers 503, systemd hears STOPPING=1) and keeps serving normally for this long, "
          "so a load balancer stops sending traffic before anything is refused; then it shuts down "
          "as TERM does. A second TERM ends the wait; INT and QUIT stop at once; skipped while a USR2 "
          "upgrade runs (the other master serves the same sockets). Stop timeouts (systemd's "
          "TimeoutStopSec, docker stop -t) need shutdown_delay + graceful_timeout.",
          ("--shutdown-delay",), "SECONDS"),
        # -- Stats
        s("stats_bind", "Stats", None, v.optional_string,
          "Address where the master serves /metrics, /stats, /healthz and /readyz "
          "(HOST:PORT or unix:PATH), from the scoreboard: it answers even when every worker is busy. "
          "Off by default. 'forkserve top --stats ADDRESS' shows it live.", ("--stats-bind",), "ADDRESS"),
        # -- Development
        s("reload", "Development", False, v.boolean,
          "Restart a worker when a source file of the app it imported changes (polled once a "
          "second); an import error is shown as a 500 page until fixed. Development only.",
          ("--reload",), kind="flag"),
        s("reload_extra_files", "Development", [], v.file_list,
          "More files to watch with --reload.", ("--reload-extra-file",), "FILE", kind="list"),
    ]
    table.extend(_operations_settings())
    for name, (arity, text) in HOOKS.items():
        validator = v.hook(arity, also=(2, 3)) if name == "post_request" else v.hook(arity)
        table.append(s(name, "Hooks", None, validator, text + " Config file only.", hook_arity=arity))
    return table


# -- Operations: StatsD, queue time and shedding, app metrics, the control socket, adaptive workers.
# (Kept in one block of their own; each lands in its section of the reference.)


def _operations_settings() -> list[Setting]:
    s = Setting
    return [
        s("max_queue_time", "HTTP", 0.0, v.number(0),
          "Shed load: a request that has already waited longer than this many seconds for the app "
          "(its queue time, see README) is answered 503 with Retry-After without calling the app, "
          "and counted; its client has most likely given up. 0 disables.",
          ("--max-queue-time",), "SECONDS"),
        s("max_workers", "Workers", 0, v.integer(0),
          "Adaptive worker count: grow from 'workers' up to this many while every worker (every "
          "app thread) is busy and requests wait longer than scale_up_queue_time; shrink back, idle "
          "workers first and gracefully, after scale_down_after seconds with spare workers. Never "
          "beyond the cgroup's memory budget, nor while its CPU quota is used up. 0: a fixed count.",
          ("--max-workers",), "INT"),
        s("scale_up_queue_time", "Workers", 0.2, v.number(0.001),
          "With max_workers: the queue time (seconds a request waited for the app, or the age of the "
          "oldest connection in the listen queue) past which a fleet of busy workers grows by one.",
          ("--scale-up-queue-time",), "SECONDS"),
        s("scale_down_after", "Workers", 30.0, v.number(0.1),
          "With max_workers: seconds with at least one idle worker and no queueing after which the "
          "fleet shrinks by one (never below 'workers').",
          ("--scale-down-after",), "SECONDS"),
        s("statsd_host", "Stats", None, v.statsd_address,
          "Send metrics to this StatsD (or DogStatsD) server: HOST:PORT or unix:PATH (a datagram "
          "socket), with gunicorn's metric names. Never blocks or fails a request.",
          ("--statsd-host",), "ADDRESS"),
        s("statsd_prefix", "Stats", "", v.string,
          "Prefix of every StatsD metric name (a '.' is added when missing).",
          ("--statsd-prefix",), "PREFIX"),
        s("dogstatsd_tags", "Stats", "", v.string,
          "Comma-separated DogStatsD tags added to every StatsD metric, e.g. 'env:prod,app:shop'.",
          ("--dogstatsd-tags",), "TAGS"),
        s("enable_backlog_metric", "Stats", False, v.boolean,
          "Also send the listen queue depth to StatsD as gunicorn's 'backlog' histogram.",
          ("--enable-backlog-metric",), kind="flag"),
        s("app_metrics", "Stats", True, v.boolean,
          "When prometheus_client is installed: give the app a private PROMETHEUS_MULTIPROC_DIR (or "
          "use the one set), mark exited workers dead, and serve the app's metrics, merged across "
          "workers, on the stats endpoint's /metrics.",
          ("--app-metrics",), kind="flag"),
        s("control_socket", "Stats", None, v.optional_string,
          "Unix socket of the master for 'forkserve ctl' (status, workers N, reload, reopen-logs, "
          "stop, stacks). Default: forkserve.ctl beside the pidfile, else in $XDG_RUNTIME_DIR, "
          "else in the directory forkserve was started in.",
          ("--control-socket",), "PATH"),
        s("control_socket_mode", "Stats", 0o600, v.octal,
          "Permission bits of the control socket file. Whatever they allow, only the master's own "
          "user and root are served (the peer's credentials are checked).",
          ("--control-socket-mode",), "OCTAL"),
        s("control_socket_disable", "Stats", False, v.boolean,
          "Do not open the control socket.", ("--no-control-socket",), kind="flag"),
    ]


SETTINGS: dict[str, Setting] = {setting.name: setting for setting in _settings()}


@dataclass
class Config:
    """Resolved settings: attribute access by name, plus where each value came from."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def set(self, name: str, value: Any, source: str) -> None:
        """Validate and store one setting; the ValueError from the validator names the setting."""
        setting = SETTINGS[name]
        try:
            self.values[name] = setting.validator(value)
        except ValueError as error:
            raise ValueError(f"setting '{name}' {error}") from None
        self.sources[name] = source + gunicorn_spelling(name, value, self.values[name])

    @property
    def app_name(self) -> str:
        """The name in process titles: proc_name, else the app spec."""
        return self.proc_name or self.wsgi_app or "forkserve"

    def hook(self, name: str) -> Callable[..., Any] | None:
        """The configured hook callable, or None."""
        return self.values.get(name)


def defaults() -> Config:
    """A Config holding every default, computed defaults worked out now."""
    config = Config()
    for name, setting in SETTINGS.items():
        default = setting.default
        if isinstance(default, Computed):
            value, why = default.compute()
            config.values[name] = value
            config.sources[name] = f"default: {why}"
        else:
            config.values[name] = _fresh(default)
            config.sources[name] = "default"
    return config


def _fresh(value: Any) -> Any:
    """A copy of mutable defaults so no Config shares a list with the registry."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value
