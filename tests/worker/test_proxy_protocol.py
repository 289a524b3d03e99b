"""The PROXY protocol end to end: behind a real HAProxy in TCP mode (send-proxy, send-proxy-v2),
and with raw bytes — a header split across reads, a peer not allowed to send one, a required
header that is missing or malformed."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest
from conftest import free_port, wait_for
from http_wire import WireReader
from system_programs import require_program

APP = "recording_app:app"
REQUEST = b"GET /environ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
HAPROXY_CONFIG = """
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend v1
    bind 127.0.0.1:{v1}
    default_backend forkserve_v1
frontend v2
    bind 127.0.0.1:{v2}
    default_backend forkserve_v2
backend forkserve_v1
    server forkserve 127.0.0.1:{upstream} send-proxy
backend forkserve_v2
    server forkserve 127.0.0.1:{upstream} send-proxy-v2
"""


def served(address: tuple[str, int], payload: bytes) -> bool:
    """Does the server answer ``payload`` yet? (For waiting on a server that speaks PROXY.)"""
    try:
        return ask(address, payload) is not None
    except OSError:
        return False


def ask(address: tuple[str, int], payload: bytes, source: str = "127.0.0.1") -> dict | None:
    """Send ``payload`` from ``source``; the environ the app saw, or None if the server closed."""
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(address)
        sock.sendall(payload)
        reader = WireReader(sock)
        try:
            return json.loads(reader.response().body)
        except EOFError:
            return None


@pytest.fixture
def haproxy(tmp_path) -> Iterator:
    haproxy = require_program("haproxy", "the PROXY protocol's real sender")
    processes = []

    def start(upstream: int) -> tuple[int, int]:
        ports = {"v1": free_port(), "v2": free_port(), "upstream": upstream}
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(**ports))
        process = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        processes.append(process)

        def listening() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", ports["v2"]), timeout=1):
                return True
            return False

        wait_for(listening, 10, message="haproxy to listen")
        return ports["v1"], ports["v2"]

    yield start
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def test_client_address_from_haproxy_send_proxy_v1_and_v2(start_server, haproxy) -> None:
    server = start_server("-w", "1", "--proxy-protocol", "auto", APP, ready=False)
    wait_for(lambda: served(server.address, b"PROXY UNKNOWN\r\n" + REQUEST), 15, message="forkserve")
    v1, v2 = haproxy(server.address[1])
    for port in (v1, v2):
        environ = ask(("127.0.0.1", port), REQUEST, source="127.0.0.2")
        assert environ is not None and environ["REMOTE_ADDR"] == "127.0.0.2", environ
    # And without HAProxy, in auto mode, a plain request is served as it is.
    assert ask(server.address, REQUEST)["REMOTE_ADDR"] == "127.0.0.1"


def test_a_header_split_byte_by_byte_and_v2_with_tlvs(start_server) -> None:
    server = start_server("-w", "1", "--proxy-protocol", "v2", APP, ready=False)
    header = (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x13" + bytes([203, 0, 113, 7, 192, 0, 2, 1])
              + (5555).to_bytes(2, "big") + (80).to_bytes(2, "big") + b"\x04\x00\x04noop")
    payload = header + REQUEST
    wait_for(lambda: served(server.address, header + REQUEST), 15, message="forkserve")
    with socket.create_connection(server.address, timeout=10) as sock:
        for index in range(len(payload)):
            sock.sendall(payload[index:index + 1])
        environ = json.loads(WireReader(sock).response().body)
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("203.0.113.7", "5555")


@pytest.mark.parametrize(("mode", "payload", "why"), [
    ("v1", REQUEST, "expected a PROXY v1 header"),
    ("v1", b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 080\r\n" + REQUEST, "malformed PROXY v1 header"),
    ("v2", b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 80\r\n" + REQUEST, "expected a PROXY v2 header"),
    ("auto", b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 80\n" + REQUEST, "PROXY v1 header not ended by CRLF"),
])
def test_missing_or_malformed_headers_close_the_connection(start_server, mode, payload, why) -> None:
    server = start_server("-w", "1", "--proxy-protocol", mode, APP, ready=False)
    wait_for(lambda: server.workers(), 10, message="a worker")
    wait_for(lambda: not served(server.address, payload) and why in server.log(), 10, message="the refusal")
    assert "Traceback" not in server.log()


def test_a_header_from_a_peer_not_allowed_closes_the_connection(start_server) -> None:
    server = start_server("-w", "1", "--proxy-protocol", "auto", "--proxy-allow-from", "192.0.2.0/24", APP)
    assert ask(server.address, b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 80\r\n" + REQUEST) is None
    wait_for(lambda: "PROXY header from a peer not in proxy_allow_ips" in server.log(), 5, message="the log line")
    assert ask(server.address, REQUEST)["REMOTE_ADDR"] == "127.0.0.1"  # plain requests from it are fine
