"""Master: the supervising process. It binds, forks, watches and stops; it never touches a request.

The rule of this folder: only ``forkserve.cli`` imports it; it imports ``worker`` (to fork
workers), ``stats``, ``process``, ``http`` and ``settings``, and never the command line: it is
handed the resolved configuration, and HUP resolves again through ``forkserve.settings``.

:mod:`.arbiter` is the loop, the signal table and the decisions. It delegates by job:
:mod:`.events` (the signal queue and what wakes the loop), :mod:`.fleet` (the workers: spawn,
reap, timeouts, recycling, stop), :mod:`.reload` (HUP), :mod:`.upgrade` (USR2), and
:mod:`.lifecycle` (pid file, daemon, systemd notifications, process title) with its helpers
:mod:`.pidfile`, :mod:`.daemon` and :mod:`.systemd`; :mod:`.watchdog` decides which worker is stuck.
"""
