"""forkserve on each of several hosts (or containers, or Kubernetes pods) behind a load balancer.

Goes with conf/haproxy.cfg, conf/nginx.conf's forkserve_hosts upstream, conf/kubernetes/ and
conf/Containerfile (which copies this file to /app/forkserve.conf.py). The test suite starts three
forkserve hosts from this very file, in network namespaces behind a real HAProxy and nginx
(tests/test_multihost.py), and runs the Containerfile's command with it as PID 1. Only
`shutdown_delay` and the worker count are overridden there, to keep the test short.
"""

import os as _os

# The app. Django: "myproject.wsgi:application"; Flask: "myapp:app".
wsgi_app = "demo.wsgi:application"

# -- sockets ---------------------------------------------------------------------------------
# The load balancer reaches each host over the network: listen on every address of the host
# (in a container or a pod, the only one it has).
bind = ["0.0.0.0:8000"]
# The master's own endpoint: /readyz for the load balancer's health check (HAProxy's httpchk,
# Kubernetes' readinessProbe), /healthz for liveness, /metrics for Prometheus. It answers even
# when every worker is busy. Keep it off the public side (a private network, the pod address).
stats_bind = "0.0.0.0:9191"

# -- workers ---------------------------------------------------------------------------------
# `workers` is left out: 2 x usable CPUs + 1, where usable honours the container's CPU limit
# (cgroup quota); README "Sizing a fleet" tells how to choose hosts x workers x threads.

# -- stopping without losing a request -------------------------------------------------------
# On TERM, /readyz answers 503 at once while the workers go on serving for this many seconds;
# then the exact drain (every accepted connection served, new SYNs dropped) and exit. It must be
# longer than the time the load balancer takes to notice and stop sending:
#   HAProxy (conf/haproxy.cfg): fall x inter + timeout check = 2 x 1 + 1 s;
#   Kubernetes (conf/kubernetes/): the preStop hook sends this TERM and waits as long, and the
#   readiness probe's periodSeconds x failureThreshold is shorter.
# Stop timeouts (terminationGracePeriodSeconds, TimeoutStopSec, docker stop -t) must exceed
# shutdown_delay + graceful_timeout; tests/test_kubernetes.py checks the manifests.
shutdown_delay = 10
# graceful_timeout keeps its default (30 s): in-flight requests and queued connections get that
# long once the delay is over.

# Idle keep-alive connections from the load balancer: held longer than it keeps them, so that
# it, not forkserve, closes an idle one (HAProxy's idle server connections and nginx's upstream
# keepalive_timeout are shorter).
keepalive = 75

# -- proxy -----------------------------------------------------------------------------------
# The load balancer's addresses: only from them are X-Forwarded-For and X-Forwarded-Proto
# believed (HAProxy's `option forwardfor`, nginx's proxy_set_header). Comma-separated in
# FORWARDED_ALLOW_IPS (a container's environment); never '*' on a network clients reach.
forwarded_allow_ips = _os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1").split(",")
secure_scheme_headers = {"X-Forwarded-Proto": "https"}

# -- logging ---------------------------------------------------------------------------------
# stderr (the error log, the default) and stdout (the access log): what systemd's journal and
# container runtimes collect.
accesslog = "-"
