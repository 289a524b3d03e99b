"""PEP 3333 end to end: every feature an app can use, through a real server and raw sockets.

Most apps run inside ``wsgiref.validate.validator`` (``pep3333_apps:validated``), which raises in
the worker on any server-side slip; each such test also checks the server log stayed clean.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, free_port, wait_for
from http_wire import exchange, send_pieces

BODY = b"line one\nline two\n\nlast line without newline"
FILE_BYTES = bytes(range(256)) * 1200  # 300 KiB, every byte value


class AppServer:
    """A module-scoped server with an events file and a data file the apps know about."""

    def __init__(self, app: str, tmp: Path, *extra: str) -> None:
        self.events = tmp / "events.txt"
        self.events.touch()
        self.data_file = tmp / "data.bin"
        self.data_file.write_bytes(FILE_BYTES)
        port = free_port()
        self.server = Server(
            ["-b", f"127.0.0.1:{port}", "-w", "1", *extra, app],
            env={"FORKSERVE_TEST_EVENTS": str(self.events), "FORKSERVE_TEST_FILE": str(self.data_file)},
            address=("127.0.0.1", port),
        )
        self.address = ("127.0.0.1", port)

    def event_lines(self) -> list[str]:
        return self.events.read_text().splitlines()

    def log(self) -> str:
        return self.server.log()


def _serve(app: str, tmp_path_factory: pytest.TempPathFactory, *extra: str) -> Any:
    served = AppServer(app, tmp_path_factory.mktemp("pep3333"), *extra)
    try:
        served.server.wait_ready()
        yield served
    finally:
        served.server.stop()


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield from _serve("pep3333_apps:validated", tmp_path_factory)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield from _serve("pep3333_apps:plain", tmp_path_factory)


@pytest.fixture(scope="module")
def no_sendfile(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield from _serve("pep3333_apps:plain", tmp_path_factory, "--no-sendfile")


@pytest.fixture
def clean_log(validated: AppServer) -> Any:
    """Fails the test if the validator (or anything else) complained in the server log."""
    before = len(validated.log())
    yield
    log = validated.log()[before:]
    for marker in ("Traceback", "AssertionError", "WSGIWarning", "[ERROR]"):
        assert marker not in log, log


def request(method: str, target: str, *headers: str, body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {target} {version}", "Host: example.com", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(body: bytes, size: int) -> bytes:
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def post_input(server: AppServer, mode: str, framing: str, body: bytes = BODY) -> dict:
    if framing == "length":
        data = request("POST", f"/input/{mode}", f"Content-Length: {len(body)}", "Connection: close", body=body)
    else:
        data = request("POST", f"/input/{mode}", "Transfer-Encoding: chunked", "Connection: close",
                       body=chunked(body, 3))
    (response,), reader = exchange(server.address, data)
    reader.sock.close()
    assert response.status == 200, response
    return json.loads(response.body)


LINES = [b"line one\n", b"line two\n", b"\n", b"last line without newline"]
EXPECTED_PIECES = {
    "read-n": [BODY[i:i + 7] for i in range(0, len(BODY), 7)],
    "readline": LINES,
    "readline-size": [b"line ", b"one\n", b"line ", b"two\n", b"\n", b"last ", b"line ", b"witho", b"ut ne",
                      b"wline"],
    "readlines": LINES,
    "readlines-hint": [b"line one\nline two\n", b"\nlast line without newline"],
    "iter": LINES,
    "mixed": [b"line one\n", b"lin", b"e two\n", b"\n", b"last line without newline"],
}


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("mode", sorted(EXPECTED_PIECES))
def test_wsgi_input_methods_under_validator(validated: AppServer, clean_log: None, mode: str, framing: str) -> None:
    seen = post_input(validated, mode, framing)
    assert [piece.encode("latin-1") for piece in seen["pieces"]] == EXPECTED_PIECES[mode]
    assert seen["after"] == ""  # reading past the end gives b"", never blocks
    assert seen["terminated"] is True
    assert seen["content_length"] == (str(len(BODY)) if framing == "length" else None)


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("mode", ["read-all", "read-none"])
def test_read_without_a_size(plain: AppServer, mode: str, framing: str) -> None:
    seen = post_input(plain, mode, framing)
    assert seen["pieces"] == [BODY.decode("latin-1")] and seen["after"] == ""


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_large_body_arrives_intact_across_many_reads(validated: AppServer, clean_log: None, framing: str) -> None:
    body = os.urandom(300_000).hex().encode()  # 600 KB of text
    seen = post_input(validated, "read-big-n", framing, body)
    assert "".join(seen["pieces"]).encode() == body


def test_empty_body_reads_as_empty(validated: AppServer, clean_log: None) -> None:
    seen = post_input(validated, "readlines", "length", b"")
    assert seen["pieces"] == [] and seen["content_length"] == "0"


@pytest.mark.parametrize(("how", "body"), [
    ("plain", b"one two three\n"),
    ("with-length", b"one two three\n"),
    ("and-iterable", b"one two three\nfour\n"),
])
def test_write_callable(validated: AppServer, clean_log: None, how: str, body: bytes) -> None:
    (response,), reader = exchange(validated.address, request("GET", f"/write/{how}"))
    if how == "with-length":
        assert response.header("Content-Length") == "14" and not response.chunked
    else:
        assert response.chunked
    assert response.body == body
    send_pieces(reader.sock, [request("GET", "/reason")])
    assert reader.response().status == 299  # the connection is still in step
    reader.sock.close()


def test_write_callable_on_http10_is_close_delimited(validated: AppServer, clean_log: None) -> None:
    (response,), reader = exchange(validated.address, request("GET", "/write/plain", version="HTTP/1.0"))
    assert response.close_delimited and response.body == b"one two three\n"
    assert response.header("Connection") == "close"
    reader.sock.close()


def test_head_never_sends_a_body(validated: AppServer, clean_log: None) -> None:
    (response,), reader = exchange(validated.address, request("HEAD", "/head"), head_request=True)
    assert response.status == 200 and response.header("Transfer-Encoding") is None
    send_pieces(reader.sock, [request("GET", "/reason")])
    follow = reader.response()  # parses only if no body bytes were left on the wire
    assert (follow.status, follow.body) == (299, b"ok")
    reader.sock.close()


def test_head_keeps_the_length_a_get_would_have(plain: AppServer) -> None:
    (response,), reader = exchange(plain.address, request("HEAD", "/head", "Connection: close"), head_request=True)
    assert response.header("Content-Length") == "30"  # len(b"a body that HEAD must not send")
    assert reader.closes()
    reader.sock.close()


def test_reason_phrase_comes_from_the_status_line(validated: AppServer, clean_log: None) -> None:
    (response,), reader = exchange(validated.address, request("GET", "/reason", "Connection: close"))
    assert response.raw_head.startswith(b"HTTP/1.1 299 Custom Reason Here\r\n")
    reader.sock.close()


# -- wsgi.file_wrapper ----------------------------------------------------------------------------

def fetch_file(server: AppServer, tag: str, offset: int = 0, method: str = "GET", version: str = "HTTP/1.1"):
    (response,), reader = exchange(server.address, request(method, f"/file?tag={tag}&offset={offset}",
                                                            "Connection: close", version=version),
                                   head_request=method == "HEAD")
    assert reader.closes()
    reader.sock.close()
    return response


def test_file_wrapper_uses_sendfile(plain: AppServer) -> None:
    response = fetch_file(plain, "sendfile", offset=1000)
    assert response.status == 200 and response.body == FILE_BYTES[1000:]
    assert response.header("Content-Length") == str(len(FILE_BYTES) - 1000)
    assert not [line for line in plain.event_lines() if line == "read sendfile"]  # no read(): sendfile


def test_file_wrapper_head_and_http10(plain: AppServer) -> None:
    head = fetch_file(plain, "head", method="HEAD")
    assert head.body == b"" and head.header("Content-Length") == str(len(FILE_BYTES))
    old = fetch_file(plain, "old", version="HTTP/1.0")
    assert old.body == FILE_BYTES and old.header("Content-Length") == str(len(FILE_BYTES))


def test_no_sendfile_setting_iterates_the_file(no_sendfile: AppServer) -> None:
    response = fetch_file(no_sendfile, "iterated", offset=1000)
    assert response.body == FILE_BYTES[1000:]
    reads = [line for line in no_sendfile.event_lines() if line == "read iterated"]
    assert len(reads) >= (len(FILE_BYTES) - 1000) // 8192  # read in 8 KiB blocks


def test_file_wrapper_under_validator(validated: AppServer, clean_log: None) -> None:
    response = fetch_file(validated, "validated", offset=5)
    assert response.body == FILE_BYTES[5:]


# -- exc_info, close(), errors --------------------------------------------------------------------

def test_exc_info_before_the_head_replaces_the_response(plain: AppServer) -> None:
    (response,), reader = exchange(plain.address, request("GET", "/exc/before-body"))
    assert (response.status, response.reason, response.body) == (503, "Service Unavailable", b"app error")
    send_pieces(reader.sock, [request("GET", "/reason")])
    assert reader.response().status == 299
    reader.sock.close()


def test_exc_info_after_the_head_reraises_and_closes(plain: AppServer) -> None:
    before = len(plain.log())
    raw = raw_until_close(plain.address, request("GET", "/exc/after-body"))
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\nb\r\nfirst part\n\r\n")
    log = wait_for(lambda: "failed after the head was sent" in (text := plain.log()[before:]) and text, 5,
                   message="the re-raised error in the log")
    assert "RuntimeError: failed after the head was sent" in log and "GET /exc/after-body" in log


def test_start_response_twice_without_exc_info_is_a_500(plain: AppServer) -> None:
    (response,), reader = exchange(plain.address, request("GET", "/exc/twice"))
    assert response.status == 500 and response.header("Connection") == "close"
    reader.sock.close()


def raw_until_close(address: tuple[str, int], data: bytes) -> bytes:
    """Everything the server sends for ``data`` until it closes the connection."""
    received = []
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(data)
        while chunk := sock.recv(65536):  # a timeout here fails the test: the server must close
            received.append(chunk)
    return b"".join(received)


def wait_for_event(server: AppServer, line: str) -> None:
    wait_for(lambda: line in server.event_lines(), 10, message=f"event {line!r}")


def test_close_is_called_after_a_normal_response(plain: AppServer) -> None:
    (response,), reader = exchange(plain.address, request("GET", "/close/normal/ok", "Connection: close"))
    assert response.body == b"fine\n"
    reader.sock.close()
    wait_for_event(plain, "close normal")


def test_close_is_called_when_the_app_raises_while_iterating(plain: AppServer) -> None:
    raw = raw_until_close(plain.address, request("GET", "/close/raising/raise"))
    assert raw.endswith(b"\r\n\r\n8\r\npartial\n\r\n")  # cut short: no last chunk
    wait_for_event(plain, "close raising")
    assert "raised while iterating raising" in plain.log()


def test_close_is_called_when_the_client_disconnects_mid_stream(plain: AppServer) -> None:
    before = len(plain.log())
    sock = socket.create_connection(plain.address, timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(request("GET", "/close/gone/endless"))
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
    sock.close()  # with unread data: a reset, the server's next send fails
    wait_for_event(plain, "close gone")
    (response,), reader = exchange(plain.address, request("GET", "/reason", "Connection: close"))
    assert response.status == 299  # the worker carries on
    reader.sock.close()
    assert "Traceback" not in plain.log()[before:]


@pytest.mark.parametrize(("how", "sent"), [("more", b"0123456789"), ("fewer", b"01234")])
def test_body_longer_or_shorter_than_content_length(plain: AppServer, how: str, sent: bytes) -> None:
    before = len(plain.log())
    pipelined = request("GET", f"/length/{how}") + request("GET", "/reason")
    raw = raw_until_close(plain.address, pipelined)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Length: 10" in head
    # What the length allowed (or fewer), then the close: never extra bytes, never the second
    # pipelined response on a stream whose framing broke.
    assert body == sent
    log = wait_for(lambda: f"GET /length/{how}: app sent {how} bytes" in (t := plain.log()[before:]) and t,
                   5, message="the length mismatch in the log")
    assert "[ERROR]" in log and "Traceback" not in log


def test_wsgi_errors_go_to_the_error_log(plain: AppServer) -> None:
    (response,), reader = exchange(plain.address, request("GET", "/errors", "Connection: close"))
    assert response.status == 200
    reader.sock.close()
    log = wait_for(lambda: "unterminated note" in (t := plain.log()) and t, 5, message="wsgi.errors lines")
    for line in ("app says: something odd happened", "first of two lines", "second of two lines",
                 "unterminated note"):
        assert f"] {line}\n" in log
