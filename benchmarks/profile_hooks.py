"""A forkserve config file (-c) used by ``python -m benchmarks.profile_worker``: cProfile in every worker.

The profiler starts once the app is loaded (``post_worker_init``) and is written out when the
worker exits (``worker_exit``), one ``worker-PID.prof`` per worker in $FORKSERVE_PROFILE_DIR,
with a ``worker-PID.json`` beside it giving the requests that worker served, so the report can
speak in microseconds per request. Only hooks are set here: every other setting comes from the
command line, exactly as in the side-by-side runner.
"""

import cProfile
import json
import os

_profiler = cProfile.Profile()


def post_worker_init(worker):
    _profiler.enable()


def worker_exit(server, worker):
    _profiler.disable()
    base = os.path.join(os.environ["FORKSERVE_PROFILE_DIR"], f"worker-{os.getpid()}")
    _profiler.dump_stats(base + ".prof")
    with open(base + ".json", "w") as file:
        json.dump({"requests": worker.slot.requests}, file)
