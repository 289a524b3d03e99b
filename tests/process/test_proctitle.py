"""Process titles: what ``ps`` shows for the master and for a worker in each state.
The titles of running processes are checked end to end in tests/master/test_process_model.py."""

from __future__ import annotations

from forkserve.process.proctitle import master_title, worker_title
from forkserve.process.scoreboard import SlotView, State

# -- titles ------------------------------------------------------------------------------------


def _view(state: State, start: float = 0.0, requests: int = 0, line: str = "") -> SlotView:
    return SlotView(0, 123, state, start, 0.0, requests, line, 0.0)


def test_titles_show_state():
    assert worker_title("app", _view(State.BUSY, 100.0, 5, "GET /path"), 101.24) == "worker [app] busy GET /path 1.2s"
    assert worker_title("app", _view(State.IDLE, requests=1234), 0) == "worker [app] idle 1234 reqs"
    assert worker_title("app", _view(State.STOPPING), 0) == "worker [app] stopping"
    assert master_title("app", 1) == "master [app] 1 worker"
    assert master_title("app", 4) == "master [app] 4 workers"
    assert master_title("app", 4, draining=True) == "master [app] 4 workers, draining"
