"""Process: what the master and the workers share as processes, below both of them.

The rule of this folder: it imports only ``forkserve.http`` and ``forkserve.settings`` (and
itself), never ``worker``, ``stats``, ``master`` or ``cli``. Here are the listening sockets and
bind specs (:mod:`.sockets`), the shared-memory scoreboard (:mod:`.scoreboard`), the error and
access logs (:mod:`.logs`), every exit code (:mod:`.exits`), calling the user's hooks
(:mod:`.hooks`), finding and importing the app (:mod:`.loader`), dropping privileges
(:mod:`.privileges`), process titles (:mod:`.proctitle`), the signal wake-up pipe (:mod:`.wakeup`)
and the stack dumps of a timed-out or crashed worker (:mod:`.stackdump`).
"""
