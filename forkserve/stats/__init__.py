"""Stats: what the master tells about the server, and ``forkserve top`` that shows it.

The rule of this folder: it imports ``forkserve.process``, ``forkserve.http`` and
``forkserve.settings``, never ``worker``, ``master`` or ``cli``; it reads the master through the
small ``Master`` protocol in :mod:`.metrics`. :mod:`.server` answers ``/metrics``, ``/stats``,
``/healthz`` and ``/readyz`` from the master's loop; :mod:`.metrics` turns the scoreboard and the
master's :class:`~.metrics.Telemetry` into Prometheus text and JSON; :mod:`.backlog` reads the
listen queue depth from the kernel; :mod:`.top` is the terminal view.
"""
