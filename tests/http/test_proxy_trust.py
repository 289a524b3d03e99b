"""Proxy trust end to end: forwarding headers count only from peers in forwarded_allow_ips.

The trusted server runs with the default (127.0.0.1,::1), so the test client is a trusted proxy;
the untrusted server allows only 10.0.0.0/8, so the very same requests must be ignored.
"""

from __future__ import annotations

import json
import socket

import pytest
from http_wire import exchange

from forkserve.http.proxy import ProxyTrust, node_address, parse_forwarded


def environ_of(server, *headers: str, target: str = "/environ") -> dict:
    lines = [f"GET {target} HTTP/1.1", "Host: example.com", "Connection: close", *headers]
    address = server.address
    (response,), reader = exchange(address, ("\r\n".join(lines) + "\r\n\r\n").encode())
    reader.sock.close()
    assert response.status == 200, response
    return json.loads(response.body)


def status_of_request(server, *headers: str) -> tuple[int, str]:
    lines = ["GET /environ HTTP/1.1", "Host: example.com", "Connection: close", *headers]
    (response,), reader = exchange(server.address, ("\r\n".join(lines) + "\r\n\r\n").encode())
    reader.sock.close()
    return response.status, response.reason


@pytest.fixture
def trusted(start_server):
    return start_server("recording_app:app", "-w", "1")


@pytest.fixture
def untrusted(start_server):
    return start_server("recording_app:app", "-w", "1", "--forwarded-allow-ips", "10.0.0.0/8")


def test_trusted_peer_sets_scheme_and_client_from_x_forwarded(trusted) -> None:
    environ = environ_of(trusted, "X-Forwarded-Proto: https", "X-Forwarded-For: 203.0.113.9, 127.0.0.1")
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["SERVER_PORT"] == "443"  # no port in Host: the scheme's default
    assert environ["REMOTE_ADDR"] == "203.0.113.9"  # 127.0.0.1 is itself a trusted proxy hop
    assert environ["REMOTE_PORT"] == "0"


def test_trusted_peer_x_forwarded_ssl(trusted) -> None:
    assert environ_of(trusted, "X-Forwarded-Ssl: on")["wsgi.url_scheme"] == "https"
    assert environ_of(trusted, "X-Forwarded-Proto: http")["wsgi.url_scheme"] == "http"


def test_trusted_peer_forwarded_header(trusted) -> None:
    environ = environ_of(trusted, 'Forwarded: for="[2001:db8::17]:4711";proto=https, for=127.0.0.1;proto=http')
    assert environ["REMOTE_ADDR"] == "2001:db8::17" and environ["REMOTE_PORT"] == "4711"
    assert environ["wsgi.url_scheme"] == "https"


def test_forwarded_is_ignored_when_any_x_forwarded_header_is_sent(trusted) -> None:
    # nginx sets X-Forwarded-For but passes a client's own Forwarded through: the client must
    # not get to choose the scheme (or the address) that way.
    environ = environ_of(trusted, "X-Forwarded-For: 198.51.100.1", "Forwarded: for=192.0.2.1;proto=https")
    assert environ["REMOTE_ADDR"] == "198.51.100.1" and environ["wsgi.url_scheme"] == "http"
    environ = environ_of(trusted, "X-Forwarded-Proto: http", "Forwarded: for=192.0.2.1;proto=https")
    assert environ["REMOTE_ADDR"] == "127.0.0.1" and environ["wsgi.url_scheme"] == "http"


def test_unknown_or_malformed_hops_leave_the_peer(trusted) -> None:
    assert environ_of(trusted, "Forwarded: for=unknown;proto=https")["REMOTE_ADDR"] == "127.0.0.1"
    assert environ_of(trusted, "X-Forwarded-For: not-an-ip")["REMOTE_ADDR"] == "127.0.0.1"
    malformed = environ_of(trusted, "Forwarded: for=192.0.2.1;proto")
    assert malformed["REMOTE_ADDR"] == "127.0.0.1" and malformed["wsgi.url_scheme"] == "http"


def test_contradictory_scheme_headers_are_refused(trusted) -> None:
    assert status_of_request(trusted, "X-Forwarded-Proto: https", "X-Forwarded-Ssl: off") == (400, "Bad Request")
    assert "contradictory scheme headers" in trusted.log()


def test_untrusted_peer_forwarding_headers_are_ignored(untrusted) -> None:
    environ = environ_of(
        untrusted, "X-Forwarded-Proto: https", "X-Forwarded-Ssl: on", "X-Forwarded-For: 203.0.113.9",
        "Forwarded: for=192.0.2.1;proto=https",
    )
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["SERVER_PORT"] == "80"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["REMOTE_PORT"] not in ("", "0")
    # Contradictions are not even looked at for an untrusted peer.
    assert status_of_request(untrusted, "X-Forwarded-Proto: https", "X-Forwarded-Ssl: off")[0] == 200


def test_unix_socket_peer_has_empty_address_and_is_trusted(start_server, tmp_path) -> None:
    path = str(tmp_path / "proxy.sock")
    server = start_server("-b", f"unix:{path}", "-w", "1", "--forwarded-allow-ips", "10.0.0.0/8",
                          "recording_app:app", address=path)
    plain = environ_of(server)
    assert plain["REMOTE_ADDR"] == "" and plain["REMOTE_PORT"] == ""
    forwarded = environ_of(server, "X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https")
    assert forwarded["REMOTE_ADDR"] == "203.0.113.7" and forwarded["wsgi.url_scheme"] == "https"


def test_ipv6_peer_trusted_by_default(start_server) -> None:
    with socket.socket(socket.AF_INET6) as probe:  # a free port on ::1 (the suite needs IPv6 loopback)
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    server = start_server("-b", f"[::1]:{port}", "-w", "1", "recording_app:app", address=("::1", port))
    environ = environ_of(server, "X-Forwarded-For: 203.0.113.8")
    assert environ["REMOTE_ADDR"] == "203.0.113.8"


# -- the pure parts ----------------------------------------------------------------------------

def test_parse_forwarded_elements_and_quoting() -> None:
    assert parse_forwarded('for=192.0.2.60;proto=http;by=203.0.113.43') == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}]
    assert parse_forwarded('For="[2001:db8:cafe::17]:4711", for=198.51.100.17') == [
        {"for": "[2001:db8:cafe::17]:4711"}, {"for": "198.51.100.17"}]
    assert parse_forwarded('for="a\\"b"') == [{"for": 'a"b'}]
    for malformed in ("for=a b", "for=1.2.3.4,", "for", "=x", 'for="open'):
        assert parse_forwarded(malformed) == [], malformed


def test_node_address_forms() -> None:
    assert node_address(" 192.0.2.1 ") == ("192.0.2.1", "0")
    assert node_address("192.0.2.1:8080") == ("192.0.2.1", "8080")
    assert node_address("2001:db8::1") == ("2001:db8::1", "0")
    assert node_address("[2001:db8::1]:443") == ("2001:db8::1", "443")
    for other in ("unknown", "_hidden", "192.0.2.1:http", "[::1]x", "host.example"):
        assert node_address(other) is None, other


def test_trust_networks_and_ipv4_mapped() -> None:
    trust = ProxyTrust(["10.0.0.0/8", "::1"], {})
    assert trust.trusts("10.1.2.3") and trust.trusts("::ffff:10.9.9.9") and trust.trusts("::1")
    assert not trust.trusts("192.0.2.1") and not trust.trusts("garbage")
    assert ProxyTrust(["*"], {}).trusts("192.0.2.1")
