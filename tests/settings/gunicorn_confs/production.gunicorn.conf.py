"""A gunicorn.conf.py as a team runs a Django or Flask app in production with gunicorn 27.

Written for gunicorn and run by forkserve unchanged (tests/settings/test_gunicorn_configs.py):
environment-driven sizing, the threaded worker, timeouts tuned for a load balancer, JSON-ish
access logs, recycling, hooks. The hooks also append a line to $HOOK_LOG so the test sees them run.
"""

import multiprocessing
import os

# -- sockets: behind a load balancer on the same network
bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
backlog = 1024

# -- workers: sized from the environment, threaded for an app that waits on its database
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
worker_class = "gthread"
threads = 4
worker_connections = 500
worker_tmp_dir = "/dev/shm"  # gunicorn: heartbeats off the disk (forkserve: big request bodies)

# -- timeouts: longer than the load balancer's idle timeout, so it closes first
timeout = 60
graceful_timeout = 20
keepalive = 75

# -- recycling, against slow leaks
max_requests = 2000
max_requests_jitter = 200

# -- request limits
limit_request_line = 8190
limit_request_fields = 200
limit_request_field_size = 16380

# -- proxy: trust the load balancer's private network
forwarded_allow_ips = "10.0.0.0/8,127.0.0.1"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# -- logging
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(D)sus "%(a)s" %({x-request-id}i)s'
capture_output = True

# -- process
proc_name = "shop-web"
preload_app = True
umask = 0o007
raw_env = ["APP_ENV=production"]
control_socket_disable = True  # gunicorn 27 opens a control socket by default


def _mark(text):
    path = os.environ.get("HOOK_LOG")
    if path:
        with open(path, "a") as log:
            log.write(f"{text}\n")


def on_starting(server):
    _mark("on_starting")


def when_ready(server):
    _mark(f"when_ready {server.pid}")


def post_fork(server, worker):
    _mark(f"post_fork {worker.pid}")


def pre_request(worker, req):
    _mark(f"pre_request {req.method} {req.path}")


def post_request(worker, req, environ):
    _mark(f"post_request {req.path} {environ['wsgi.url_scheme']}")


def worker_exit(server, worker):
    _mark(f"worker_exit {worker.pid}")
