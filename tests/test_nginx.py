"""forkserve behind a real nginx running conf/nginx.conf, over the TCP and the unix-socket upstream.

Clients connect from 127.0.0.2 so that the client's address differs from nginx's (127.0.0.1):
the app must see the former only when forkserve trusts nginx's forwarding headers.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time

import pytest
import requests
from conftest import raw_exchange, status_of
from nginx import RequestLoop, client_session

TRANSPORTS = ["tcp", "unix"]
CLIENT = "127.0.0.2"
BIG = 20 * 1024 * 1024
DOWNLOAD_PATTERN = bytes(range(256)) * 256  # what demo /download serves, repeated


def arrival_times(session: requests.Session, url: str) -> list[tuple[float, bytes]]:
    """When each piece of a streamed response reached the client, relative to the request."""
    started = time.monotonic()
    pieces = []
    with session.get(url, stream=True, timeout=20) as reply:
        assert reply.status_code == 200, reply.text
        for piece in reply.iter_content(chunk_size=None):
            pieces.append((time.monotonic() - started, piece))
    return pieces


def spread(pieces: list[tuple[float, bytes]]) -> float:
    return pieces[-1][0] - pieces[0][0]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_demo_app_through_nginx(behind_nginx, tls_files, transport):
    server, proxy = behind_nginx(transport, "-w", "2", "demo.wsgi:application")
    session = client_session(CLIENT, tls_files)

    assert session.get(f"{proxy.url}/hello", timeout=10).text == "Hello, world!"
    described = session.get(f"{proxy.tls_url}/json?a=1", timeout=10).json()
    assert described["remote_addr"] == CLIENT
    assert described["scheme"] == "https"
    assert described["host"] == "127.0.0.1"
    echoed = session.post(f"{proxy.url}/echo", data={"name": "wörld"}, timeout=10).json()
    assert echoed["fields"] == {"name": "wörld"}
    cookies = session.get(f"{proxy.url}/cookies", timeout=10)
    assert {"demo_session", "demo_theme"} <= set(cookies.cookies.keys())
    moved = session.get(f"{proxy.url}/redirect", allow_redirects=False, timeout=10)
    assert moved.status_code == 302 and moved.headers["Location"].endswith("/hello")
    assert session.get(f"{proxy.url}/crash", timeout=10).status_code == 500

    # Static files come from nginx's alias: the demo itself would answer 404 for this path.
    (proxy.static_root / "site.css").write_text("body { color: teal }\n")
    static = session.get(f"{proxy.url}/static/site.css", timeout=10)
    assert static.status_code == 200 and static.text == "body { color: teal }\n"
    assert static.headers["Content-Type"] == "text/css" and "max-age=604800" in static.headers["Cache-Control"]
    direct = raw_exchange(server, b"GET /static/site.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(direct) == 404


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_large_upload_and_download_through_nginx(behind_nginx, transport):
    _server, proxy = behind_nginx(transport, "-w", "2", "demo.wsgi:application")
    payload = os.urandom(BIG)
    uploaded = requests.post(f"{proxy.url}/upload", data=payload, timeout=60,
                             headers={"Content-Type": "application/octet-stream", "X-Filename": "big.bin"})
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json() == {"size": BIG, "sha256": hashlib.sha256(payload).hexdigest(), "filename": "big.bin"}

    downloaded = requests.get(f"{proxy.url}/download?size={BIG}", timeout=60)
    assert downloaded.status_code == 200
    expected = hashlib.sha256(DOWNLOAD_PATTERN * (BIG // len(DOWNLOAD_PATTERN))).hexdigest()
    assert len(downloaded.content) == BIG
    assert hashlib.sha256(downloaded.content).hexdigest() == expected == downloaded.headers["X-Content-SHA256"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_streamed_responses_arrive_incrementally(behind_nginx, transport):
    # The demo's /stream goes through the config's unbuffered location. chunks=3, delay=0.5: the
    # pieces are produced over a second; buffered, they would all arrive together.
    _server, proxy = behind_nginx(transport, "-w", "2", "demo.wsgi:application")
    pieces = arrival_times(requests.Session(), f"{proxy.url}/stream?chunks=3&delay=0.5")
    assert b"".join(piece for _, piece in pieces) == b"chunk 0\nchunk 1\nchunk 2\n"
    assert spread(pieces) >= 0.5, pieces


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read a response head off a raw socket, a little at a time: (head, body bytes read past it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(1024)
        assert piece, f"connection closed after {data!r}"
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def read_exactly(sock: socket.socket, already: bytes, size: int) -> bytes:
    chunks, received = [already], len(already)
    while received < size:
        piece = sock.recv(1 << 20)
        assert piece, f"connection closed after {received} of {size} bytes"
        chunks.append(piece)
        received += len(piece)
    return b"".join(chunks)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_client_that_does_not_read_does_not_hold_the_worker(behind_nginx, transport):
    # One worker. A client asks for 32 MB, takes the head and then reads nothing. nginx's
    # proxy_buffering takes the whole response off the worker (into its temp files), so the next
    # request is served at once. Without buffering the worker would sit in send() until that
    # client read on (32 MB is more than every socket buffer on the way holds), and the second
    # request would time out.
    _server, proxy = behind_nginx(transport, "-w", "1", "proxy_probe:application")
    size = 32 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as stalled:
        stalled.sendall(f"GET /big?size={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head, body_start = read_head(stalled)  # the worker is now sending the body
        assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {size}".encode() in head

        other = requests.get(f"{proxy.url}/who", timeout=10)
        assert other.status_code == 200 and other.json()["path"] == "/who"

        body = read_exactly(stalled, body_start, size)
    assert body == (bytes(range(256)) * 256) * (size // 65536)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_django_project_through_nginx(behind_nginx, tls_files, transport):
    _server, proxy = behind_nginx(transport, "-w", "2", "djangoproject.wsgi:application")
    session = client_session(CLIENT, tls_files)
    assert session.get(f"{proxy.url}/", timeout=10).text == "django says hi"
    echoed = session.post(f"{proxy.tls_url}/echo?x=1", data={"name": "value"}, timeout=10).json()
    assert echoed == {"method": "POST", "path": "/echo", "get": {"x": "1"}, "post": {"name": "value"},
                      "body_length": len("name=value"), "secure": True, "remote_addr": CLIENT}
    streamed = session.get(f"{proxy.url}/stream", timeout=10)
    assert streamed.text == "".join(f"line {i}\n" for i in range(5))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_flask_app_through_nginx(behind_nginx, tls_files, transport):
    _server, proxy = behind_nginx(transport, "-w", "2", "flask_app:app")
    session = client_session(CLIENT, tls_files)
    assert session.get(f"{proxy.url}/", timeout=10).text == "flask says hi"
    data = session.post(f"{proxy.tls_url}/json?q=1", data={"k": "v"}, timeout=10).json()
    # "length" is 0: Flask's form parsing consumed the body before get_data() ran.
    assert data == {"method": "POST", "args": {"q": "1"}, "form": {"k": "v"}, "remote_addr": CLIENT,
                    "scheme": "https", "length": 0}


SPOOFED = {
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Protocol": "ssl",
    "X-Forwarded-Ssl": "on",
}


@pytest.mark.parametrize(("transport", "trusted"), [("tcp", True), ("tcp", False), ("unix", True), ("unix", False)])
def test_client_address_and_scheme_only_via_trusted_forwarding(behind_nginx, tls_files, transport, trusted):
    # trusted=False: forwarded_allow_ips does not list nginx's address. Over TCP the app then
    # sees nginx's address and plain http; a unix-socket peer is a local process and is trusted
    # whatever the setting (as in gunicorn).
    allow = [] if trusted else ["--forwarded-allow-ips", "192.0.2.1"]
    _server, proxy = behind_nginx(transport, "-w", "1", *allow, "proxy_probe:application")
    believed = trusted or transport == "unix"
    session = client_session(CLIENT, tls_files)

    over_tls = session.get(f"{proxy.tls_url}/who", timeout=10).json()
    assert over_tls["remote_addr"] == (CLIENT if believed else "127.0.0.1")
    assert over_tls["scheme"] == ("https" if believed else "http")
    assert over_tls["x_forwarded_for"] == CLIENT
    assert len(over_tls["x_request_id"]) == 32  # nginx's $request_id, passed on

    # A client's own forwarding headers change nothing: nginx appends the real address to
    # X-Forwarded-For (forkserve takes the nearest untrusted hop), overwrites X-Forwarded-Proto
    # and blanks the other scheme headers forkserve would believe.
    spoofed = session.get(f"{proxy.url}/who", headers=SPOOFED, timeout=10).json()
    assert spoofed["remote_addr"] == (CLIENT if believed else "127.0.0.1")
    assert spoofed["scheme"] == "http"
    assert spoofed["x_forwarded_for"] == f"203.0.113.9, {CLIENT}"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_upstream_keepalive_connections_are_reused(behind_nginx, transport):
    # One client connection to nginx, so one nginx worker and its pool; forkserve's keepalive
    # outlasts the pool's keepalive_timeout, as the config advises.
    _server, proxy = behind_nginx(transport, "-w", "2", "--keep-alive", "15", "proxy_probe:application")
    session = requests.Session()
    seen = []
    for index in range(30):
        if index % 3:
            reply = session.get(f"{proxy.url}/conn", timeout=10)
        else:
            reply = session.post(f"{proxy.url}/conn", data=b"x" * 1000, timeout=10)
        assert reply.status_code == 200, reply.text
        seen.append(reply.json()["connection"])
    # Without the pool (no HTTP/1.1 upstream, or "Connection: close" passed on) this is 30.
    assert len(set(seen)) <= 2, seen


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_concurrent_posts_through_nginx_all_succeed(behind_nginx, transport):
    # More concurrent clients than workers: nginx opens more upstream connections than forkserve
    # has workers, so idle pooled connections get closed by forkserve for waiting ones. Not one
    # request may fail for it (this is also the baseline of the HUP/TERM-under-load tests).
    _server, proxy = behind_nginx(transport, "-w", "2", "--keep-alive", "15", "proxy_probe:application")
    with RequestLoop(f"{proxy.url}/post", threads=4, method="POST", data=b"y" * 2000,
                     max_seconds=20, max_requests=400) as load:
        load.wait_for_requests(400, timeout=30)
    result = load.result
    assert result.total >= 400 and not result.failures(), (result.outcomes, proxy.error_log())
    assert set(proxy.access_statuses()) == {200}, proxy.access_statuses()
