"""A real server with ``--http-parser httptools``: its workers read heads with llhttp (and only
they load httptools: a default worker never maps it), serve what a client sends with requests
and with raw bytes, keep-alive and pipelined, and refuse what the default parser refuses."""

from __future__ import annotations

import json
from pathlib import Path

import requests
from conftest import raw_exchange


def _maps_httptools(pid: int) -> bool:
    return "httptools" in Path(f"/proc/{pid}/maps").read_text()


def test_a_server_reads_with_llhttp_and_serves_clients(start_server) -> None:
    server = start_server("-w", "1", "--http-parser", "httptools", "recording_app:app")
    fast = start_server("-w", "1", "recording_app:app")  # the default, for contrast
    (worker,), (default_worker,) = server.wait_workers(1), fast.wait_workers(1)
    assert _maps_httptools(worker) and not _maps_httptools(default_worker)

    with requests.Session() as session:
        environ = session.get(f"{server.url}/environ?q=1", headers={"X-Test": "a b", "Cookie": "c=1"}).json()
        assert (environ["PATH_INFO"], environ["QUERY_STRING"], environ["HTTP_X_TEST"], environ["HTTP_COOKIE"]) == (
            "/environ", "q=1", "a b", "c=1")
        posted = session.post(f"{server.url}/echo", data=b"hello", headers={"Content-Type": "text/plain"})
        assert (posted.status_code, posted.json()) == (200, {"body": "hello", "length": 5})
        assert session.get(f"{server.url}/environ").json()["pid"] == worker  # the same kept-alive worker

    pipelined = raw_exchange(server, b"GET /environ HTTP/1.1\r\nHost: a\r\n\r\n"
                                     b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok"
                                     b"GET /environ HTTP/1.0\r\n\r\n")
    assert pipelined.count(b"HTTP/1.1 200 OK\r\n") == 3 and b'{"body": "ok", "length": 2}' in pipelined
    assert json.loads(pipelined.rsplit(b"\r\n\r\n", 1)[1])["SERVER_PROTOCOL"] == "HTTP/1.0"

    for raw in (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a \r\nX: caf\xe9\r\n\r\n",
                b"get / HTTP/1.1\r\nHost: a\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n"):
        answer, default_answer = raw_exchange(server, raw, half_close=True), raw_exchange(fast, raw, half_close=True)
        assert answer.startswith(b"HTTP/1.1 ") and answer.split(b"\r\n")[0] == default_answer.split(b"\r\n")[0], raw
    assert raw_exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert "Traceback" not in server.log()
