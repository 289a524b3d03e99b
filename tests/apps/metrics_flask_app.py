"""A Flask app counting with prometheus_client, as apps do under gunicorn's multiprocess recipe."""

import os

from flask import Flask
from prometheus_client import Counter, Gauge

app = Flask(__name__)
HITS = Counter("shop_hits", "Requests the app handled", ["path"])
LIVE = Gauge("shop_worker_live", "1 per live worker", multiprocess_mode="livesum")
PID = Gauge("shop_worker_pid", "The worker's pid (one series per worker, mode 'all')")
LIVE.set(1)
PID.set(os.getpid())


@app.route("/hit/<name>")
def hit(name):
    HITS.labels(path=name).inc()
    return "counted"
