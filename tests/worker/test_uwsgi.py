"""nginx's uwsgi_pass: forkserve with ``--protocol uwsgi`` behind the shipped conf/nginx-uwsgi.conf
(TCP and unix-socket upstreams), and raw packets: malformed ones are closed and logged and never
reach the app."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import requests
from conftest import wait_for
from nginx import NGINX_UWSGI_CONF, Nginx

from forkserve.http.uwsgi import UwsgiError, UwsgiReader

TRANSPORTS = ("tcp", "unix")


def packet(variables: dict[str, str], modifier1: int = 0, size: int | None = None) -> bytes:
    body = b"".join(struct.pack("<H", len(key)) + key.encode() + struct.pack("<H", len(value)) + value.encode()
                    for key, value in variables.items())
    return struct.pack("<BHB", modifier1, len(body) if size is None else size, 0) + body


GET = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/environ?x=1", "PATH_INFO": "/environ", "QUERY_STRING": "x=1",
       "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "198.51.100.4", "REMOTE_PORT": "4321",
       "SERVER_NAME": "example.com", "SERVER_PORT": "80", "HTTP_HOST": "example.com"}


def test_a_packet_in_any_split_gives_the_same_request() -> None:
    wire = packet(GET) + b"next"
    for size in (1, 5, len(wire)):
        reader, head = UwsgiReader(8192), None
        for start in range(0, len(wire), size):
            head = reader.feed(wire[start:start + size])
            if head is not None:
                break
        assert head is not None and head.variables == GET and head.method == b"GET"
        assert not head.keep_alive and head.content_length is None


@pytest.mark.parametrize("wire", [
    packet(GET, modifier1=5),  # not a WSGI request
    packet(GET, size=3),  # sizes that do not add up
    packet({"": "x", **GET}),  # an empty key
    packet({"BAD KEY": "x", **GET}),
    packet({**GET, "CONTENT_LENGTH": "-5"}),
    packet({"PATH_INFO": "/"}),  # no REQUEST_METHOD
    struct.pack("<BHB", 0, 60000, 0) + b"x" * 10,  # over the size limit
])
def test_malformed_packets_are_refused(wire: bytes) -> None:
    with pytest.raises(UwsgiError):
        head = UwsgiReader(8192).feed(wire)
        assert head is not None


def raw(server, payload: bytes) -> bytes:
    """Send ``payload``; everything the server answers before it closes."""
    with server.connect() as sock:
        sock.sendall(payload)
        return b"".join(iter(lambda: sock.recv(65536), b""))


def test_raw_packets_end_to_end(start_server, tmp_path) -> None:
    hits = tmp_path / "hits.jsonl"
    server = start_server("-w", "1", "--protocol", "uwsgi", "recording_app:app", ready=False,
                          env={"FORKSERVE_TEST_HITS": str(hits)})

    def answers() -> bool:
        try:
            return raw(server, packet(GET)).startswith(b"HTTP/1.1 200 ")
        except OSError:
            return False

    wait_for(answers, 15, message="forkserve speaking uwsgi")
    reply = raw(server, packet(GET))
    _head, _, body = reply.partition(b"\r\n\r\n")
    environ = json.loads(body)
    assert environ["REMOTE_ADDR"] == "198.51.100.4" and environ["QUERY_STRING"] == "x=1"
    assert environ["SERVER_NAME"] == "example.com" and environ["wsgi.url_scheme"] == "http"
    posted = raw(server, packet({**GET, "REQUEST_METHOD": "POST", "PATH_INFO": "/echo", "CONTENT_LENGTH": "5"})
                 + b"hello")
    assert json.loads(posted.partition(b"\r\n\r\n")[2]) == {"body": "hello", "length": 5}
    before = hits.read_text().count("\n")
    for bad in (packet(GET, modifier1=5), packet({"PATH_INFO": "/"}), packet(GET, size=3)):
        assert raw(server, bad) == b""  # closed, no reply on this protocol
    assert hits.read_text().count("\n") == before  # nothing reached the app
    wait_for(lambda: server.log().count("closed the connection from 127.0.0.1") >= 3, 5, message="the log lines")
    assert "Traceback" not in server.log()


def test_a_peer_not_in_uwsgi_allow_ips_is_closed(start_server) -> None:
    server = start_server("-w", "1", "--protocol", "uwsgi", "--uwsgi-allow-from", "192.0.2.1",
                          "recording_app:app", ready=False)
    wait_for(lambda: "not in uwsgi_allow_ips" in _try(server), 15, message="the refusal")


def _try(server) -> str:
    try:
        raw(server, packet(GET))
    except OSError:
        pass
    return server.log()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_demo_app_behind_nginx_uwsgi_pass(start_server, tmp_path_factory, tls_files, transport) -> None:
    args = ("-w", "2", "--protocol", "uwsgi", "demo.wsgi:application")
    if transport == "unix":
        path = str(tmp_path_factory.mktemp("forkserve") / "forkserve.sock")
        start_server("-b", f"unix:{path}", *args, address=path, ready=False)
        upstream: tuple[str, int] | str = path
    else:
        server = start_server(*args, ready=False)
        upstream = server.address
    proxy = Nginx(tmp_path_factory.mktemp("nginx"), upstream, tls_files, conf=NGINX_UWSGI_CONF)
    try:
        proxy.start()
        wait_for(lambda: _status(f"{proxy.url}/json") == 200, 15, message="the demo through nginx")
        before = proxy.access_statuses()  # (502s while forkserve was still starting)
        data = requests.get(f"{proxy.url}/json?a=1", timeout=10).json()
        assert data["path"] == "/json" and data["query"] == {"a": "1"} and data["remote_addr"] == "127.0.0.1"
        over_tls = requests.get(f"{proxy.tls_url}/json", verify=str(tls_files.cert), timeout=10).json()
        assert over_tls["scheme"] == "https"
        body = bytes(range(256)) * 4000
        for _ in range(3):
            reply = requests.post(f"{proxy.url}/upload", files={"file": ("x.bin", body)}, timeout=20)
            assert reply.status_code == 200, reply.text
            assert hashlib.sha256(body).hexdigest() in reply.text
        assert set(proxy.access_statuses() - before) == {200}, proxy.access_log()
    finally:
        proxy.stop()


def _status(url: str) -> int:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return 0

