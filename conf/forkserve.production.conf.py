"""forkserve in production: behind nginx (conf/nginx.conf), under systemd (conf/forkserve.service).

Copy to /etc/forkserve/forkserve.conf.py and adapt. conf/forkserve.conf.py lists every setting
with its default; this file sets only what production changes, with the reason. The test suite
loads this file and serves an app with it (paths overridden on the command line).
"""

import logging as _logging

# The app. Django: "myproject.wsgi:application"; Flask: "myapp:app".
wsgi_app = "demo.wsgi:application"

# -- sockets ---------------------------------------------------------------------------------
# nginx reaches forkserve over a unix socket (conf/nginx.conf's @UPSTREAM_UNIX@). Under systemd
# socket activation (conf/forkserve.socket) the socket comes from systemd and this is ignored.
bind = ["unix:/run/forkserve.sock"]
backlog = 2048

# -- workers ---------------------------------------------------------------------------------
# `workers` is left out on purpose: the default is 2 x usable CPUs + 1, where usable honours the
# container's cgroup CPU quota and the affinity mask; WEB_CONCURRENCY overrides it.
#
# nginx keeps idle upstream connections open for 10 s (keepalive_timeout in its upstream block);
# forkserve holds an idle connection longer, so that nginx, not forkserve, is the side that closes
# it and never sends a request down a connection forkserve is closing.
keepalive = 15
# Stuck in the app for 30 s: dump the worker's stack to the error log, then kill it. Below nginx's
# proxy_read_timeout (60 s), so the stack dump comes before nginx gives up.
timeout = 30
# TERM and reload give in-flight requests this long; systemd's TimeoutStopSec must be longer.
graceful_timeout = 30
# Behind a load balancer that probes /readyz (set stats_bind too), drain before stopping: on TERM,
# fail readiness and keep serving this long, then stop. Add it to TimeoutStopSec. nginx on the
# same host needs none of it: forkserve serves every queued connection before it exits.
# shutdown_delay = 10
# Recycle workers now and then, so a slow leak in the app never grows unbounded.
max_requests = 10000
max_requests_jitter = 1000

# -- HTTP ------------------------------------------------------------------------------------
# nginx refuses bodies over client_max_body_size (64m) itself; forkserve's limit matches it.
limit_request_body = 64 * 1024 * 1024

# -- proxy -----------------------------------------------------------------------------------
# Believe X-Forwarded-For/-Proto only from nginx. A unix-socket peer is always trusted; the
# addresses matter when nginx connects over TCP.
forwarded_allow_ips = ["127.0.0.1", "::1"]
# Only the header nginx sets (it blanks the others a client might send).
secure_scheme_headers = {"X-Forwarded-Proto": "https"}

# -- logging and process ---------------------------------------------------------------------
# Files under systemd's LogsDirectory, rotated by conf/logrotate.forkserve (USR1 reopens them).
# In a container, leave errorlog at '-' (stderr) and accesslog at '-' (stdout) instead.
errorlog = "/var/log/forkserve/error.log"
accesslog = "/var/log/forkserve/access.log"
loglevel = "info"
# systemd's RuntimeDirectory; logrotate reads the master's pid from here.
pidfile = "/run/forkserve/forkserve.pid"
proc_name = "myapp"


def when_ready(server):
    """Hooks are plain functions with gunicorn's names and arguments. This one marks the log."""
    _logging.getLogger("forkserve.error").info("production config loaded; ready to serve")
