"""Request ids: taken from trusted peers, generated otherwise, seen by the app, echoed, logged."""

from __future__ import annotations

import json
import logging
import re
import socket

import requests
from conftest import free_port, wait_for

from forkserve.http.accesslog import after_request_hook
from forkserve.http.proxy import ProxyTrust
from forkserve.http.requestid import ENVIRON_KEY, RequestIds, before_request_hook
from forkserve.http.response import Response


def _environ_of(server, headers: dict[str, str] | None = None) -> tuple[dict[str, object], str]:
    reply = requests.get(server.url + "/environ", headers=headers or {}, timeout=5)
    assert reply.status_code == 200
    return reply.json(), reply.headers["X-Request-ID"]


def test_unit_trusted_untrusted_invalid_and_generated():
    ids = RequestIds("X-Request-ID", ProxyTrust(["10.0.0.1"], {}), prefix="p")
    cases = [
        ({"HTTP_X_REQUEST_ID": "abc-123"}, "10.0.0.1", "abc-123"),  # trusted peer: kept
        ({"HTTP_X_REQUEST_ID": "abc-123"}, "10.9.9.9", "p-1"),  # untrusted: replaced
        ({"HTTP_X_REQUEST_ID": "has space"}, "10.0.0.1", "p-2"),  # not a token: replaced
        ({"HTTP_X_REQUEST_ID": "x" * 201}, "10.0.0.1", "p-3"),  # too long: replaced
        ({}, "10.0.0.1", "p-4"),
        ({"HTTP_X_REQUEST_ID": "unix-peer"}, "", "unix-peer"),  # unix socket peers are local
    ]
    for environ, peer, expected in cases:
        response = Response(None, False, True, lambda: True)  # type: ignore[arg-type]
        ids.assign(environ, response, peer)
        assert environ["forkserve.request_id"] == expected
        assert response.extra_head == f"X-Request-ID: {expected}\r\n"
    quiet = RequestIds("", ProxyTrust([], {}))
    response = Response(None, False, True, lambda: True)  # type: ignore[arg-type]
    environ: dict[str, object] = {}
    quiet.assign(environ, response, "1.2.3.4")
    assert environ["forkserve.request_id"] and response.extra_head == ""


def test_trusted_peer_id_round_trip_and_access_log(start_server, tmp_path):
    sock_path = str(tmp_path / "app.sock")
    port = free_port()
    server = start_server("-w", "2", "-b", f"127.0.0.1:{port}", "-b", f"unix:{sock_path}",
                          "--access-logfile", "-",
                          "--access-logformat", "%(U)s %({forkserve.request_id}e)s %({x-request-id}o)s",
                          "demo.wsgi:application", address=("127.0.0.1", port))
    # Over TCP from 127.0.0.1, which forwarded_allow_ips trusts by default.
    environ, echoed = _environ_of(server, {"X-Request-ID": "from-nginx-42"})
    assert environ["forkserve.request_id"] == "from-nginx-42" == echoed
    # Generated ids differ per request and look like prefix + counter.
    _, first = _environ_of(server)
    _, second = _environ_of(server)
    assert first != second and re.fullmatch(r"[0-9a-f]{12}-\d+", first) and re.fullmatch(r"[0-9a-f]{12}-\d+", second)
    # Through the unix socket: a local peer, trusted.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(sock_path)
        sock.sendall(b"GET /environ HTTP/1.1\r\nHost: x\r\nX-Request-ID: via-unix\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\r\nX-Request-ID: via-unix\r\n" in head
    assert json.loads(body)["forkserve.request_id"] == "via-unix"
    wait_for(lambda: "/environ from-nginx-42 from-nginx-42" in server.stdout()
             and f"/environ {first} {first}" in server.stdout(), 10, message="ids in the access log")


def test_untrusted_peer_cannot_choose_the_id(start_server):
    server = start_server("-w", "1", "--forwarded-allow-ips", "10.0.0.1", "demo.wsgi:application")
    environ, echoed = _environ_of(server, {"X-Request-ID": "forged"})
    assert echoed != "forged" and environ["forkserve.request_id"] == echoed


def test_header_name_setting_and_disabling_the_echo(start_server):
    server = start_server("-w", "1", "--request-id-header", "X-Trace-Id", "demo.wsgi:application")
    reply = requests.get(server.url + "/environ", headers={"X-Trace-Id": "t-1", "X-Request-ID": "other"}, timeout=5)
    assert reply.headers["X-Trace-Id"] == "t-1" and "X-Request-ID" not in reply.headers
    assert reply.json()["forkserve.request_id"] == "t-1"
    quiet = start_server("-w", "1", "--request-id-header", "", "demo.wsgi:application")
    reply = requests.get(quiet.url + "/environ", timeout=5)
    assert "X-Request-ID" not in reply.headers and reply.json()["forkserve.request_id"]


def test_hooks_chain_to_the_next_callback():
    """The worker chains its own callbacks (pre_request/post_request hooks) behind ours."""
    seen: list[object] = []
    assign = before_request_hook("X-Request-ID", ProxyTrust([], {}),
                                 then=lambda environ, response, peer: seen.append(environ[ENVIRON_KEY]))
    environ: dict[str, object] = {}
    assign(environ, Response(None, False, True, lambda: True), "10.0.0.9")  # type: ignore[arg-type]
    assert seen == [environ[ENVIRON_KEY]]

    quiet = logging.getLogger("forkserve.test.quiet")
    quiet.setLevel(logging.CRITICAL + 1)
    after = lambda environ, response, started: seen.append("after")
    assert after_request_hook("%(h)s", quiet, then=after) is after  # log off: nothing added
    assert after_request_hook("%(h)s", quiet) is None

    lines: list[str] = []
    loud = logging.getLogger("forkserve.test.loud")
    loud.propagate = False
    loud.setLevel(logging.INFO)
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    loud.addHandler(handler)
    chained = after_request_hook("%(h)s %(s)s", loud, then=after)
    assert chained is not None
    response = Response(None, False, True, lambda: True)  # type: ignore[arg-type]
    response.status_code = 204
    chained({"REMOTE_ADDR": "10.0.0.9"}, response, 0.0)
    assert lines == ["10.0.0.9 204"] and seen[-1] == "after"
