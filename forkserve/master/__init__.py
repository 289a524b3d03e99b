"""Master: the supervising process. It binds, forks, watches and stops; it never touches a request.

The rule of this folder: only ``forkserve.cli`` imports it; it imports ``worker`` (to fork
workers), ``stats``, ``process``, ``http`` and ``settings``, and never the command line: it is
handed the resolved configuration, and HUP resolves again through ``forkserve.settings``.

:mod:`.arbiter` is the loop; :mod:`.reload` prepares HUP, :mod:`.upgrade` starts USR2's new
master, :mod:`.lifecycle` runs the pid file, daemon, systemd notifications and process title
with its helpers :mod:`.pidfile`, :mod:`.daemon`, :mod:`.systemd`, and :mod:`.watchdog` decides
which worker is stuck.
"""
