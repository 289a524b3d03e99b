"""App threads (``--threads N``): N requests of one worker in the app at once, each on its own
scoreboard slot, each timed out on its own; hooks, logs and counters stay per request."""

from __future__ import annotations

import collections
import concurrent.futures
import json
import re

import requests
from conftest import free_port, process_title, wait_for

APP = "threads_app:app"


def get_all(url: str, count: int, timeout: float = 20) -> list[requests.Response]:
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: requests.get(url, timeout=timeout), range(count)))


def test_eight_requests_meet_in_one_worker_with_eight_threads(start_server) -> None:
    server = start_server("-w", "1", "--threads", "8", APP)
    replies = get_all(server.url + "/meet?8", 8)
    assert [reply.text for reply in replies] == ["met"] * 8


def test_one_thread_runs_one_request_at_a_time(start_server) -> None:
    """The control: without app threads the same requests cannot meet (each waits 1 s alone)."""
    server = start_server("-w", "1", "--threads", "1", APP)
    replies = get_all(server.url + "/meet?2,1", 2)
    assert [reply.status_code for reply in replies] == [504, 504]


def test_stats_top_and_title_show_each_thread(start_server) -> None:
    stats = f"127.0.0.1:{free_port()}"
    server = start_server("-w", "1", "--threads", "4", "--stats-bind", stats, APP)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        pending = [pool.submit(requests.get, server.url + "/sleep?1.5", timeout=10) for _ in range(3)]

        def three_busy() -> dict | None:
            document = requests.get(f"http://{stats}/stats", timeout=5).json()
            return document if document["threads_by_state"].get("busy") == 3 else None

        document = wait_for(three_busy, 5, message="3 busy threads in /stats")
        (worker,) = document["workers"]
        assert [thread["thread"] for thread in worker["threads"]] == [1, 2, 3, 4]
        assert sorted(thread["current_request"] or "" for thread in worker["threads"]) == [
            "", "GET /sleep?1.5", "GET /sleep?1.5", "GET /sleep?1.5"]
        metrics = requests.get(f"http://{stats}/metrics", timeout=5).text
        assert 'forkserve_threads{state="busy"} 3' in metrics
        wait_for(lambda: "3/4 busy" in process_title(worker["pid"]), 5, message="the title to show 3/4 busy")
        assert [future.result().text for future in pending] == ["slept"] * 3
    document = requests.get(f"http://{stats}/stats", timeout=5).json()
    assert document["workers"][0]["requests"] >= 3


def test_a_timeout_interrupts_only_that_thread(start_server) -> None:
    server = start_server("-w", "1", "--threads", "4", "--timeout", "2", APP)
    pid = server.wait_workers(1)[0]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        other = pool.submit(requests.get, server.url + "/sleep?1", timeout=20)  # (within the timeout)
        spun = requests.get(server.url + "/spin?30", timeout=20)
        assert spun.status_code == 500  # interrupted at the next bytecode, long before 30 s
        assert other.result().text == "slept"  # the other thread's request was left alone
    log = server.log()
    assert re.search(rf"worker {pid} thread \d timed out: 'GET /spin\?30' has run", log), log
    assert re.search(r"thread forkserve-app-\d timed out; its stack:", log), log
    assert "in app" in log and "threads_app.py" in log  # the stack names the app's function
    assert requests.get(server.url + "/", timeout=10).json()["pid"] == pid  # the worker serves on


def test_a_thread_that_cannot_be_interrupted_retires_its_worker_gracefully(start_server) -> None:
    server = start_server("-w", "1", "--threads", "4", "--timeout", "1", APP)
    pid = server.wait_workers(1)[0]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(requests.get, server.url + "/sleep?6", timeout=30)  # in C: not interruptible
        wait_for(lambda: "still in its timed-out request; replacing the worker gracefully" in server.log(), 10,
                 message="the worker to be retired")
        other = requests.get(server.url + "/", timeout=10)  # served meanwhile (by the old worker or the new)
        assert other.status_code == 200
        assert stuck.result().status_code in (200, 500)  # it finishes; the worker waited for it
    wait_for(lambda: pid not in server.workers() and len(server.workers()) == 1, 20, message="the replacement")
    assert requests.get(server.url + "/", timeout=10).json()["pid"] != pid


def test_max_requests_holds_with_threads(start_server) -> None:
    server = start_server("-w", "1", "--threads", "4", "--max-requests", "20", APP,
                          env={"THREADS_APP_IMPORT_SECONDS": "2"})
    pids = collections.Counter()
    with requests.Session() as session:
        for _ in range(60):
            pids[session.get(server.url + "/", timeout=20).json()["pid"]] += 1
    assert len(pids) >= 2 and max(pids.values()) <= 20, pids


def test_hooks_run_in_the_request_thread_and_logs_do_not_mix(start_server, tmp_path) -> None:
    record = tmp_path / "hooks.jsonl"
    config = tmp_path / "forkserve.conf.py"
    config.write_text(
        "import json, threading\n"
        f"_RECORD = {str(record)!r}\n"
        "def _note(what, req):\n"
        "    with open(_RECORD, 'a') as handle:\n"
        "        handle.write(json.dumps([what, req.environ['forkserve.request_id'], "
        "threading.current_thread().name]) + '\\n')\n"
        "def pre_request(worker, req):\n"
        "    _note('pre', req)\n"
        "def post_request(worker, req, environ, resp):\n"
        "    _note('post', req)\n"
    )
    access = tmp_path / "access.log"
    server = start_server("-w", "1", "--threads", "4", "-c", str(config), "--access-logfile", str(access),
                          "--access-logformat", "json", APP)
    for reply in get_all(server.url + "/errors?20", 16):
        assert reply.text == "written"
    notes = [json.loads(line) for line in record.read_text().splitlines()]
    by_request: dict[str, dict[str, str]] = collections.defaultdict(dict)
    for what, request_id, thread in notes:
        by_request[request_id][what] = thread
    served = [ids for ids in by_request.values() if "pre" in ids]
    assert len(served) >= 16
    assert all(ids["pre"] == ids["post"] and ids["pre"].startswith("forkserve-app-") for ids in served)
    assert len({ids["pre"] for ids in served}) > 1  # several threads took part
    lines = [json.loads(line) for line in access.read_text().splitlines()]
    assert len([line for line in lines if line["path"] == "/errors"]) == 16
    written = [line for line in server.log().splitlines() if " line " in line and "[ERROR]" in line]
    assert len(written) == 16 * 20
    assert all(re.search(r"\[ERROR\] m line \d+ of m$", line) for line in written), written[:5]
