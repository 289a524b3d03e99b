"""TLS in the worker's loop, against real clients: verification, mutual TLS, a crawl of a
handshake that holds no worker, plain HTTP on the TLS port, file responses, certificate rotation
by HUP (and a bad certificate that keeps the old workers)."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import socket
import ssl

import pytest
import requests
from conftest import run_forkserve, wait_for
from http_wire import WireReader
from tlscerts import Authority, make_authority

APP = "recording_app:app"
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # the readiness probe


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return make_authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server_pair(authority: Authority):
    return authority.issue("server", "localhost")


def tls_args(pair, *extra: str) -> list[str]:
    return ["--certfile", str(pair.cert), "--keyfile", str(pair.key), *extra]


def https(server) -> str:
    return f"https://localhost:{server.address[1]}"


def client_context(authority: Authority, client=None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(authority.ca.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def start_tls(start_server, pair, *args: str, client=None):
    """A TLS forkserve; readiness is checked over TLS (the default probe speaks plain HTTP)."""
    server = start_server(*tls_args(pair), *args, ready=False)
    cert = (str(client.cert), str(client.key)) if client is not None else None

    def answers() -> bool:
        try:
            return requests.get(https(server) + "/__probe", verify=False, cert=cert, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_for(answers, 15, message=f"forkserve over TLS; its log: {server.log()}")
    return server


def test_https_with_verification_and_the_environ(start_server, authority, server_pair) -> None:
    server = start_tls(start_server, server_pair, "-w", "1", APP)
    with requests.Session() as session:
        for _ in range(3):  # keep-alive over TLS
            environ = session.get(https(server) + "/environ", verify=str(authority.ca.cert), timeout=10).json()
    assert environ["wsgi.url_scheme"] == "https" and environ["HTTPS"] == "on"
    assert environ["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3") and environ["SSL_CLIENT_VERIFY"] == "NONE"
    body = bytes(range(256)) * 200
    echoed = requests.post(https(server) + "/echo", data=body, verify=str(authority.ca.cert), timeout=10).json()
    assert echoed["length"] == len(body)


def test_mutual_tls_required(start_server, authority, server_pair) -> None:
    client = authority.issue("client", "alice", server=False)
    server = start_tls(start_server, server_pair, "-w", "1", "--cert-reqs", "required",
                       "--ca-certs", str(authority.ca.cert), APP, client=client)
    with pytest.raises(requests.exceptions.SSLError):  # no client certificate: no connection
        requests.get(https(server) + "/environ", verify=str(authority.ca.cert), timeout=10)
    wait_for(lambda: "closed the connection from 127.0.0.1" in server.log() and "TLS handshake failed" in server.log(),
             5, message="the refusal's log line")
    environ = requests.get(https(server) + "/environ", verify=str(authority.ca.cert),
                           cert=(str(client.cert), str(client.key)), timeout=10).json()
    assert environ["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert environ["SSL_CLIENT_S_DN"] == "CN=alice,O=forkserve tests"
    assert environ["SSL_CLIENT_I_DN"] == "CN=forkserve test CA,O=forkserve tests"
    assert "Traceback" not in server.log()


def test_slow_handshakes_hold_no_worker(start_server, authority, server_pair) -> None:
    server = start_tls(start_server, server_pair, "-w", "1", "--header-timeout", "30", APP)
    hello = _client_hello(authority)
    idle = [socket.create_connection(server.address, timeout=10) for _ in range(20)]
    crawling = [socket.create_connection(server.address, timeout=10) for _ in range(5)]
    try:
        for sock in crawling:
            sock.sendall(hello[: len(hello) // 2])  # half a ClientHello, then nothing
        for _ in range(5):
            reply = requests.get(https(server) + "/__probe", verify=str(authority.ca.cert), timeout=3)
            assert reply.text == "probe"
    finally:
        for sock in idle + crawling:
            sock.close()


def _client_hello(authority: Authority) -> bytes:
    """The bytes a real TLS client opens with."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context(authority).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def test_plain_http_on_the_tls_port_gets_400_and_a_close(start_server, server_pair) -> None:
    server = start_tls(start_server, server_pair, "-w", "1", APP)
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = WireReader(sock)
        response = reader.response()
        assert response.status == 400 and b"plain HTTP request was sent to HTTPS port" in response.body
        assert reader.closes()
    assert "Traceback" not in server.log()


def test_file_responses_over_tls_are_read_and_encrypted(start_server, authority, server_pair) -> None:
    server = start_tls(start_server, server_pair, "-w", "1", "front_app:app")
    reply = requests.get(https(server) + "/file?3000000", verify=str(authority.ca.cert), timeout=20)
    assert reply.content == b"f" * 3000000


def test_hup_loads_a_renewed_certificate_and_a_bad_one_keeps_the_old_workers(start_server, authority,
                                                                             tmp_path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    first, second = authority.issue("first", "localhost"), authority.issue("second", "localhost")
    cert, key = live / "cert.pem", live / "key.pem"
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    server = start_tls(start_server, type(first)(cert, key), "-w", "2", APP)
    assert _served_certificate(server, authority) == _fingerprint(first.cert)
    shutil.copy(second.cert, cert)  # a renewal (certbot, cert-manager)
    shutil.copy(second.key, key)
    server.signal(signal.SIGHUP)
    wait_for(lambda: _served_certificate(server, authority) == _fingerprint(second.cert), 15,
             message="the renewed certificate")
    key.write_text(first.key.read_text())  # a key that does not match the certificate
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed: setting 'certfile'" in server.log(), 10, message="the refusal")
    assert _served_certificate(server, authority) == _fingerprint(second.cert)  # still serving


def _fingerprint(path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(path.read_text())).hexdigest()


def _served_certificate(server, authority: Authority) -> str | None:
    try:
        with socket.create_connection(server.address, timeout=5) as raw, \
                client_context(authority).wrap_socket(raw, server_hostname="localhost") as sock:
            return hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest()
    except OSError:
        return None


def test_a_certificate_that_does_not_load_is_a_one_line_error(tmp_path, server_pair) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    completed = run_forkserve("--certfile", str(bad), "-b", "127.0.0.1:0", APP)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("forkserve: error: setting 'certfile'"), completed.stderr


def test_environ_json_shape(start_server, authority, server_pair) -> None:
    """The keys the README documents for TLS are there, as strings."""
    server = start_tls(start_server, server_pair, "-w", "1", APP)
    environ = requests.get(https(server) + "/environ", verify=str(authority.ca.cert), timeout=10).json()
    assert all(isinstance(environ[key], str) for key in ("HTTPS", "SSL_PROTOCOL", "SSL_CIPHER", "SSL_CLIENT_VERIFY"))
    json.dumps(environ)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_closed_tls_connections_are_not_held_until_their_deadline(start_server, authority, server_pair) -> None:
    # Each connection needs more than one turn of the loop (its handshake), so it gets a deadline
    # in the timer heap; once closed it must not stay there — with its TLS state — until that
    # deadline (here 60 s) comes up. 1,000 connections held that way cost some 36 MB.
    server = start_tls(start_server, server_pair, "-w", "1", "--header-timeout", "60", "--keep-alive", "60", APP)
    [worker] = server.wait_workers(1)
    context = client_context(authority)
    request = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

    def one_connection() -> None:
        with socket.create_connection(server.address, timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(request)
            assert WireReader(sock).response().status == 200

    for _ in range(200):  # warm-up: the worker's allocator and caches settle
        one_connection()
    before = _rss_kib(worker)
    for _ in range(1000):
        one_connection()
    growth = _rss_kib(worker) - before
    assert growth < 4096, f"the worker grew by {growth} KiB over 1,000 closed TLS connections"
