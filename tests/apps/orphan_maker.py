"""An app whose request leaves an orphaned grandchild behind, as apps that shell out sometimes do.

``/orphan`` runs ``sh -c 'sleep 30 & echo $!'`` (the sleep's output detached, so the
shell's pipe closes when the shell exits): the shell prints its background child's pid and
exits at once, so the ``sleep`` loses its parent and is re-parented to the pid namespace's init
(or the nearest child subreaper). In a container that init is forkserve's master, which must
reap it when it ends, or it stays a zombie forever.
"""

from __future__ import annotations

import json
import os
import subprocess


def application(environ, start_response):
    if environ["PATH_INFO"] != "/orphan":
        body = b"ok"
    else:
        shell = subprocess.run(
            ["sh", "-c", "sleep 30 </dev/null >/dev/null 2>&1 & echo $!"],
            capture_output=True, check=True, timeout=10,
        )
        body = json.dumps({"orphan_pid": int(shell.stdout), "worker_pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
