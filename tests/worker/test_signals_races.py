"""Signals at the awkward moments of a worker's life: while it exits, before its handlers exist,
during a hook. None may be lost, and none may raise into code that does not expect it (a worker
that let WorkerAbort escape its exit path fell back into the master's code it was forked from:
a traceback, and the master's pid file and socket file removed by a worker)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import requests
from conftest import wait_for

from forkserve.process.stackdump import TIMEOUT_SIGNAL
from forkserve.worker.worker import HELD_SIGNALS, signals_held

APP = "supervision_app:application"

# worker_exit makes the exit path slow (a log handler whose flush takes 0.3 s, as a network log
# handler may) and pesters the worker with INT, QUIT and the timeout signal all along it.
PESTERING_EXIT = '''
import logging, os, signal, threading, time

class _SlowFlush(logging.Handler):
    def emit(self, record):
        pass

    def flush(self):
        time.sleep(0.3)

def _pester():
    kinds = [signal.SIGQUIT, signal.SIGINT, signal.SIGQUIT, signal.SIGRTMIN]
    for number in range(200):  # ends with the process, at the latest after ~2 s
        os.kill(os.getpid(), kinds[number % 4] if number < 8 else kinds[number % 2])
        time.sleep(0.01)

def worker_exit(server, worker):
    logging.getLogger("forkserve.error").addHandler(_SlowFlush())
    threading.Thread(target=_pester, daemon=True).start()
    time.sleep(0.05)  # the first signals land in the hook itself
'''


def test_signals_during_the_exit_path_change_nothing(start_server, tmp_path):
    config = tmp_path / "forkserve.conf.py"
    config.write_text(PESTERING_EXIT)
    socket_path = tmp_path / "forkserve.sock"
    pid_path = tmp_path / "forkserve.pid"
    server = start_server("-c", str(config), "-w", "1", "-b", f"unix:{socket_path}", "-p", str(pid_path),
                          APP, address=str(socket_path))
    worker = server.wait_workers(1)[0]
    os.kill(worker, signal.SIGTERM)  # an exit the master did not ask for: it forks a replacement
    wait_for(lambda: re.search(rf"worker {worker} (exited|was killed)", server.log()), 15,
             message="the worker's exit to be logged")
    log = server.log()
    assert f"worker {worker} exited\n" in log, log  # exit code 0: it stopped, it did not crash
    assert "Traceback" not in log and "exited with code" not in log, log
    # What a worker falling into the master's code would have removed:
    assert socket_path.exists() and pid_path.read_text().strip() == str(server.pid)
    server.wait_workers(1)
    server.wait_ready()


def test_a_timeout_in_a_hook_aborts_the_request(start_server, tmp_path):
    """The hook must not swallow the abort: the client gets the 500, not the app's 200."""
    config = tmp_path / "forkserve.conf.py"
    config.write_text(
        "import time\n"
        "def pre_request(worker, req):\n"
        "    if req.path == '/hello':\n"
        "        time.sleep(30)\n"
    )
    server = start_server("-c", str(config), "-w", "1", "--timeout", "1", APP)
    stuck = server.wait_workers(1)[0]
    try:
        outcome = requests.get(server.url + "/hello", timeout=25).status_code
    except requests.ConnectionError:
        outcome = "closed"  # SIGKILLed before it could answer: still not the app's 200
    assert outcome in (500, "closed")
    log = server.log()
    assert f"worker {stuck} timed out: 'GET /hello'" in log
    assert "in pre_request" in log  # the stack dump shows where it hung
    assert "hook pre_request raised" not in log
    wait_for(lambda: stuck not in server.workers(), 10, message="the stuck worker to go")
    server.wait_ready()


def test_signals_sent_to_a_worker_before_its_handlers_exist_wait_for_them():
    """Fork under signals_held: the child gets the worker's signals blocked (so a USR1 or TERM
    sent before its handlers are installed stays pending), the master gets its mask back and
    the signals that reached it meanwhile."""
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        with signals_held():
            pid = os.fork()
            if pid == 0:  # the child: everything it was sent is still pending
                code = 1
                try:
                    for signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGQUIT, TIMEOUT_SIGNAL):
                        os.kill(os.getpid(), signum)
                    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
                    pending = signal.sigpending()
                    wanted = {signal.SIGUSR1, signal.SIGTERM, signal.SIGQUIT, TIMEOUT_SIGNAL}
                    code = 0 if HELD_SIGNALS <= blocked and wanted <= pending else 2
                finally:
                    os._exit(code)
            # The master meanwhile: held, not lost. (Sent to this thread: the test process may
            # have other threads — pytest-xdist's — which do not block it; the master has none.)
            signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
            assert received == []
        assert received == [signal.SIGUSR1]
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
        deadline = time.monotonic() + 10
        while (result := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if result[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        assert result[0] == pid and os.waitstatus_to_exitcode(result[1]) == 0
    finally:
        signal.signal(signal.SIGUSR1, previous)
