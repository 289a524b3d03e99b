"""Worker: one forked worker process, from fork to exit.

The rule of this folder: it imports ``forkserve.process``, ``forkserve.http`` and
``forkserve.settings``, never ``stats``, ``master`` or ``cli`` (the master imports it, to fork
workers). :mod:`.worker` is the process's life: privileges, loading the app, the accept loop,
signals, draining; it hands each connection to ``forkserve.http.connection``. :mod:`.recycling`
holds its limits (requests, memory, lifetime), :mod:`.monitor` its once-a-second thread
(process title, ``--reload`` watch), :mod:`.reloader` the ``--reload`` file watch.
"""
