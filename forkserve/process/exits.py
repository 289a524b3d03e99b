"""Exit codes: every code a forkserve process exits with, each defined here once.

The same numbers mean the same thing in the ``forkserve`` command, the master, a worker, a
daemon's launching command and ``forkserve top``. Process managers act on them: the systemd unit
(``RestartPreventExitStatus=2 3``) does not restart on a usage error or an app that cannot load.

:func:`describe_status` names how a child ended, from its wait status, for the logs.
"""

import os
import signal

EXIT_OK = 0
# Something failed that a restart may fix or a human must look at: ``--check-config`` found a
# problem, the master could not start (a socket cannot be bound, a live master owns the pid file,
# a daemon stopped during start-up), a worker crashed, ``forkserve top`` could not read the stats.
EXIT_FAILURE = 1
# The command line, the environment or the config file is wrong (also: no terminal for ``top``).
EXIT_USAGE = 2
# The app cannot be loaded (import error, missing attribute); the master stops instead of
# respawning workers that cannot boot. A worker exits with it when its first load fails.
EXIT_BOOT_FAILED = 3
# The forked child of a USR2 upgrade could not exec the new master (the shell's "cannot execute").
EXIT_EXEC_FAILED = 127


def describe_status(status: int) -> str:
    """'SIGSEGV' or 'exit code 7': how a wait status is named in logs."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            return signal.Signals(signum).name
        except ValueError:
            return f"signal {signum}"
    return f"exit code {os.WEXITSTATUS(status)}"
