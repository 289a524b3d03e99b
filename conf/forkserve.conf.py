"""forkserve configuration: every setting, at its default.

Copy this file to ./forkserve.conf.py (loaded automatically) or pass it with -c PATH, and
change what you need. A name that is not a setting is an error, so typos cannot hide;
prefix your own helper names with '_'. Generated from forkserve/settings/registry.py by
'python -m forkserve.settings.docs --write'; a test checks that it is current.
"""

# ---- Config ------------------------------------------------------------------------------------

# The WSGI application, as module:attr (attr defaults to 'application') or module:factory().
# wsgi_app = 'demo.wsgi:application'

# ---- Server socket -----------------------------------------------------------------------------

# Address to listen on: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N. Repeat for several. Default
# 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set. (command line: -b, --bind)
bind = ['127.0.0.1:8000']

# Listen queue length for each bound socket (capped by net.core.somaxconn). (command line: --backlog)
backlog = 2048

# Set SO_REUSEPORT on TCP sockets. (command line: --reuse-port)
reuse_port = False

# ---- Workers -----------------------------------------------------------------------------------

# Number of worker processes. Also read from WEB_CONCURRENCY. (command line: -w, --workers)
# Default: 2 x usable CPUs + 1 (cgroup quota and affinity aware).
# workers = ...

# Worker type, gunicorn's names: 'sync' and 'gthread' (or their gunicorn class paths) are the same
# forkserve worker (an I/O loop per process, the app run by 'threads' threads); other worker classes
# are refused, with what to use instead. (command line: -k, --worker-class)
worker_class = 'sync'

# Threads running the app in each worker. 1: the app runs on the worker's loop thread, one request at
# a time. N > 1: the loop hands complete requests to a pool of N threads (for apps that wait on
# databases or APIs). (command line: --threads)
threads = 1

# Seconds a worker may spend in the app on one request before the master dumps every thread's stack to
# the error log and replaces it. A worker that shows no heartbeat for longer than max(timeout,
# keepalive + header_timeout + 2) + 2 s while booting or idle (deadlocked) is treated the same. 0
# disables both. (command line: -t, --timeout)
timeout = 30.0

# Seconds workers get to finish in-flight requests (and, on TERM, the connections queued in the listen
# backlog) on TERM, reload or recycling before SIGKILL. (command line: --graceful-timeout)
graceful_timeout = 30.0

# Seconds an idle keep-alive connection is held (it costs the worker a selector entry, not its time).
# 0 closes after every response. (command line: --keep-alive)
keepalive = 2.0

# Most connections one worker holds at once (reading a request, idle, waiting for the app, flushing a
# response); at the limit it stops accepting and the listen queue keeps new arrivals for its siblings.
# (command line: --worker-connections)
worker_connections = 1000

# A worker serves at most this many requests (plus jitter), a hard limit: it asks for a replacement a
# tenth of the budget (at least 10 requests) ahead, and is stopped once that one is ready; the request
# that reaches the limit is answered with Connection: close whether or not it is. 0 disables. (command
# line: --max-requests)
max_requests = 0

# Add a random 0..N to each worker's max_requests so they do not restart together. (command line:
# --max-requests-jitter)
max_requests_jitter = 0

# Replace a worker whose resident memory exceeds this many MB after a request: it finishes that
# response, logs its RSS and exits. 0 disables. (command line: --max-worker-memory)
max_worker_memory = 0

# A worker takes no new request after it has lived this many seconds (plus jitter), a hard deadline;
# its replacement is started a tenth of the lifetime (at least 10 s) ahead. 0 disables. (command line:
# --max-worker-lifetime)
max_worker_lifetime = 0.0

# Add a random 0..N seconds to each worker's max_worker_lifetime. (command line: --max-worker-
# lifetime-jitter)
max_worker_lifetime_jitter = 0.0

# On HUP: 'all' starts every new worker then stops the old ones; 'rolling' replaces one worker at a
# time, each after its replacement is ready. (command line: --reload-strategy)
reload_strategy = 'all'

# Adaptive worker count: grow from 'workers' up to this many while every worker (every app thread) is
# busy and requests wait longer than scale_up_queue_time; shrink back, idle workers first and
# gracefully, after scale_down_after seconds with spare workers. Never beyond the cgroup's memory
# budget, nor while its CPU quota is used up. 0: a fixed count. (command line: --max-workers)
max_workers = 0

# With max_workers: the queue time (seconds a request waited for the app, or the age of the oldest
# connection in the listen queue) past which a fleet of busy workers grows by one. (command line:
# --scale-up-queue-time)
scale_up_queue_time = 0.2

# With max_workers: seconds with at least one idle worker and no queueing after which the fleet
# shrinks by one (never below 'workers'). (command line: --scale-down-after)
scale_down_after = 30.0

# ---- HTTP --------------------------------------------------------------------------------------

# Longest request line in bytes (414 beyond). 0 means the 64 KiB hard cap. (command line: --limit-
# request-line)
limit_request_line = 4094

# Most header fields in a request (431 beyond). 0 means the hard cap of 32768. (command line: --limit-
# request-fields)
limit_request_fields = 100

# Longest header field in bytes (431 beyond). 0 means the 64 KiB hard cap. (command line: --limit-
# request-field-size)
limit_request_field_size = 8190

# Largest request body in bytes (413 beyond). 0 means unlimited. (command line: --limit-request-body)
limit_request_body = 1073741824

# Seconds a client has to send the whole request head before it gets 408 (a connection that sends
# nothing at all is closed without a reply). (command line: --header-timeout)
header_timeout = 10.0

# Seconds a client may stall while sending the body or reading the response (408 / close). (command
# line: --body-timeout)
body_timeout = 30.0

# Read each request body completely before calling the app (in memory up to request_buffer_size, then
# in a temporary file in worker_tmp_dir), as nginx does, so a slow upload never holds the worker;
# --no-request-buffering lets the app read the body from the socket as it arrives. (command line:
# --request-buffering)
request_buffering = True

# Bytes of a buffered request body kept in memory; a larger body goes to a temporary file. (command
# line: --request-buffer-size)
request_buffer_size = 65536

# Directory for buffered request bodies larger than request_buffer_size. Default: the system's
# temporary directory. (command line: --worker-tmp-dir)
worker_tmp_dir = None

# Header names containing '_': 'drop' them, 'refuse' the request with 400, or 'dangerous'ly pass them
# to the app where they collide with '-' names. (command line: --header-map)
header_map = 'drop'

# Accept obsolete line folding in header values instead of answering 400. (command line: --permit-
# obsolete-folding)
permit_obsolete_folding = False

# What reads ordinary request heads: 'h11' (a one-pass Python fast path), 'httptools' (llhttp, in C:
# pip install 'forkserve[fast]'), or 'auto' (httptools when it imports, else h11). Either way anything
# unusual goes to h11 with forkserve's stricter checks, which decides. (command line: --http-parser)
http_parser = 'h11'

# Use os.sendfile for wsgi.file_wrapper responses of regular files; --no-sendfile iterates the file in
# blocks instead. (command line: --sendfile)
sendfile = True

# Response header echoing the request id (taken from a trusted peer's header of that name or
# generated; the app sees it as environ['forkserve.request_id']). Empty to not echo it. (command line:
# --request-id-header)
request_id_header = 'X-Request-ID'

# Shed load: a request that has already waited longer than this many seconds for the app (its queue
# time, see README) is answered 503 with Retry-After without calling the app, and counted; its client
# has most likely given up. 0 disables. (command line: --max-queue-time)
max_queue_time = 0.0

# ---- TLS ---------------------------------------------------------------------------------------

# PEM certificate (chain) file: serve HTTPS on every bound address. HUP makes new workers load it
# afresh (certificate renewals); a file that does not load keeps the old workers. (command line:
# --certfile)
certfile = None

# PEM private key file (default: the key in certfile). (command line: --keyfile)
keyfile = None

# PEM file of the certificate authorities client certificates are checked against. (command line:
# --ca-certs)
ca_certs = None

# Client certificates: 'none' (not asked for), 'optional' (checked if sent), 'required' (mutual TLS;
# no certificate, no connection). gunicorn's 0/1/2 work too. (command line: --cert-reqs)
cert_reqs = 'none'

# OpenSSL cipher list for TLS 1.2 (default: the ssl module's secure defaults). (command line:
# --ciphers)
ciphers = None

# Accepted for gunicorn compatibility: the handshake always runs in the worker's loop, before the
# request is read, without holding the worker. (command line: --do-handshake-on-connect)
do_handshake_on_connect = False

# Treat a client that closes without a TLS close_notify as a normal close (as gunicorn). (command
# line: --suppress-ragged-eofs)
suppress_ragged_eofs = True

# ---- Proxy -------------------------------------------------------------------------------------

# Peers (addresses, CIDRs, or '*') whose forwarding headers are trusted: X-Forwarded-For and the
# secure scheme headers, or else (when none of those is sent) the standard Forwarded (for=, proto=).
# Unix-socket peers are always trusted; other peers' forwarding headers are ignored. (command line:
# --forwarded-allow-ips)
forwarded_allow_ips = ['127.0.0.1', '::1']

# Read a PROXY protocol header (HAProxy send-proxy, an AWS NLB) from peers in proxy_allow_ips: 'v1',
# 'v2' (required), 'auto' (either, or none), 'off'. The client address in it becomes
# REMOTE_ADDR/REMOTE_PORT everywhere. (command line: --proxy-protocol)
proxy_protocol = 'off'

# Peers (addresses, CIDRs, or '*') allowed to send a PROXY header; a header from anyone else closes
# the connection. Unix-socket peers are always allowed. (command line: --proxy-allow-from)
proxy_allow_ips = ['127.0.0.1', '::1']

# What the listeners speak: 'http', or 'uwsgi' for nginx's uwsgi_pass (the packets' variables become
# the environ; peers must be in uwsgi_allow_ips). (command line: --protocol)
protocol = 'http'

# Peers (addresses, CIDRs, or '*') allowed to send uwsgi packets; unix-socket peers are always
# allowed. (command line: --uwsgi-allow-from)
uwsgi_allow_ips = ['127.0.0.1', '::1']

# Headers (from trusted peers) that mark a request as https, with the value that does. Contradicting
# each other they get a 400. (command line: --secure-scheme-headers)
secure_scheme_headers = {'X-FORWARDED-PROTOCOL': 'ssl', 'X-FORWARDED-PROTO': 'https', 'X-FORWARDED-SSL': 'on'}

# ---- Logging -----------------------------------------------------------------------------------

# Access log file; '-' is stdout. Off by default. (command line: --access-logfile)
accesslog = None

# Access log line format with gunicorn's atoms (h l u t r s m U q H b B f a T D M L p {header}i
# {header}o {var}e), or 'json' for one JSON object per line. (command line: --access-logformat)
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

# Error log file; '-' is stderr. (command line: --error-logfile, --log-file)
errorlog = '-'

# Error log level. (command line: --log-level)
loglevel = 'info'

# A logging.config.dictConfig dictionary for full control (config file only).
logconfig_dict = {}

# Send the processes' stdout and stderr (file descriptors 1 and 2) to the error log. (command line:
# --capture-output)
capture_output = False

# ---- Process -----------------------------------------------------------------------------------

# Name in process titles. Default: the app spec. (command line: -n, --name)
proc_name = None

# Write the master's pid to this file (atomically); removed on exit. A file naming a live forkserve
# master stops the start; a stale one is replaced. (command line: -p, --pid)
pidfile = None

# Detach from the terminal and run in the background, after binding. The command returns once the
# workers serve (exit 0) or start-up failed (its exit code). (command line: -D, --daemon)
daemon = False

# Run workers as this user (name or uid); its primary group unless 'group' is set. Sockets, pid file
# and logs stay the master's (log files are handed over so USR1 works). (command line: -u, --user)
user = None

# Run workers as this group (name or gid). (command line: -g, --group)
group = None

# umask for unix socket files; when set, also for the master and workers (unset, they keep the
# inherited umask, and a daemon gets 022). (command line: -m, --umask)
umask = 0o0

# Set environment variables: NAME=VALUE. Repeat for several. (command line: -e, --env)
raw_env = []

# Change to this directory before loading the app. (command line: --chdir)
chdir = None

# Comma-separated directories to put first on sys.path. (command line: --pythonpath)
pythonpath = None

# Import the app in the master before forking (faster start, copy-on-write memory). (command line:
# --preload)
preload_app = False

# Seconds to drain before a TERM shutdown: the master fails its readiness check at once (/readyz
# answers 503, systemd hears STOPPING=1) and keeps serving normally for this long, so a load balancer
# stops sending traffic before anything is refused; then it shuts down as TERM does. A second TERM
# ends the wait; INT and QUIT stop at once; skipped while a USR2 upgrade runs (the other master serves
# the same sockets). Stop timeouts (systemd's TimeoutStopSec, docker stop -t) need shutdown_delay +
# graceful_timeout. (command line: --shutdown-delay)
shutdown_delay = 0.0

# ---- Stats -------------------------------------------------------------------------------------

# Address where the master serves /metrics, /stats, /healthz and /readyz (HOST:PORT or unix:PATH),
# from the scoreboard: it answers even when every worker is busy. Off by default. 'forkserve top
# --stats ADDRESS' shows it live. (command line: --stats-bind)
stats_bind = None

# Send metrics to this StatsD (or DogStatsD) server: HOST:PORT or unix:PATH (a datagram socket), with
# gunicorn's metric names. Never blocks or fails a request. (command line: --statsd-host)
statsd_host = None

# Prefix of every StatsD metric name (a '.' is added when missing). (command line: --statsd-prefix)
statsd_prefix = ''

# Comma-separated DogStatsD tags added to every StatsD metric, e.g. 'env:prod,app:shop'. (command
# line: --dogstatsd-tags)
dogstatsd_tags = ''

# Also send the listen queue depth to StatsD as gunicorn's 'backlog' histogram. (command line:
# --enable-backlog-metric)
enable_backlog_metric = False

# When prometheus_client is installed: give the app a private PROMETHEUS_MULTIPROC_DIR (or use the one
# set), mark exited workers dead, and serve the app's metrics, merged across workers, on the stats
# endpoint's /metrics. (command line: --app-metrics)
app_metrics = True

# Unix socket of the master for 'forkserve ctl' (status, workers N, reload, reopen-logs, stop,
# stacks). Default: forkserve.ctl beside the pidfile, else in $XDG_RUNTIME_DIR, else in the directory
# forkserve was started in. (command line: --control-socket)
control_socket = None

# Permission bits of the control socket file. Whatever they allow, only the master's own user and root
# are served (the peer's credentials are checked). (command line: --control-socket-mode)
control_socket_mode = 384

# Do not open the control socket. (command line: --no-control-socket)
control_socket_disable = False

# ---- Development -------------------------------------------------------------------------------

# Restart a worker when a source file of the app it imported changes (polled once a second); an import
# error is shown as a 500 page until fixed. Development only. (command line: --reload)
reload = False

# More files to watch with --reload. (command line: --reload-extra-file)
reload_extra_files = []

# ---- Hooks -------------------------------------------------------------------------------------

# on_starting(server): in the master, before it binds sockets and forks. Config file only.
# def on_starting(server):
#     ...

# on_reload(server): in the master, when HUP re-reads the configuration. Config file only.
# def on_reload(server):
#     ...

# when_ready(server): in the master, once the sockets are bound and workers forked. Config file only.
# def when_ready(server):
#     ...

# pre_fork(server, worker): in the master, just before a worker is forked. Config file only.
# def pre_fork(server, worker):
#     ...

# post_fork(server, worker): in the worker, just after fork. Config file only.
# def post_fork(server, worker):
#     ...

# post_worker_init(worker): in the worker, once the app is loaded. Config file only.
# def post_worker_init(worker):
#     ...

# worker_int(worker): in the worker, when INT or QUIT makes it exit at once. Config file only.
# def worker_int(worker):
#     ...

# worker_abort(worker): in the worker, when the master aborts it for a timeout. Config file only.
# def worker_abort(worker):
#     ...

# pre_exec(server): in the master, before a USR2 upgrade execs the new master. Config file only.
# def pre_exec(server):
#     ...

# pre_request(worker, req): in the worker, before the app is called. Config file only.
# def pre_request(worker, req):
#     ...

# post_request(worker, req, environ, resp): in the worker, after the response (as in gunicorn, a
# function of (worker, req) or (worker, req, environ) works too). Config file only.
# def post_request(worker, req, environ, resp):
#     ...

# child_exit(server, worker): in the master, after a worker has been reaped. Config file only.
# def child_exit(server, worker):
#     ...

# worker_exit(server, worker): in the worker, just before it exits. Config file only.
# def worker_exit(server, worker):
#     ...

# nworkers_changed(server, new_value, old_value): the worker count changed. Config file only.
# def nworkers_changed(server, new_value, old_value):
#     ...

# on_exit(server): in the master, just before it exits. Config file only.
# def on_exit(server):
#     ...

# ssl_context(config, default_ssl_context_factory): in each worker, returns the SSLContext to serve
# TLS with (call the factory for forkserve's own). Config file only.
# def ssl_context(config, default_ssl_context_factory):
#     ...
