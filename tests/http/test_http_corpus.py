"""The request-case corpus: every file in tests/requests/ is a raw request and what must happen.

Each case runs against one real server (module scope) in three chunkings — the whole request in
one send, one byte per send, and one send per CRLF-ended line — with each of the two parsers
(``--http-parser h11``, the default, and ``httptools``), and each time the test checks:
the statuses of the responses in order, how many times the app was reached (the recording app
appends a line per request it is handed), whether the server closes the connection or keeps it
usable (a probe request must then get its own answer, so no stray bytes were left behind),
the environ fields the app saw, and, for every refusal, the shape of the reply (reason phrase,
short body, ``Connection: close``) and its info line in the log with the peer's port.

Case file format (TOML; see tests/requests/README.md)::

    about = "what the case is about"
    request = '''
    POST /x HTTP/1.1\\r\\n
    ...
    '''
    chunkings = ["whole"]          # optional; default: whole, bytes, lines

    [expect]
    statuses = [200]               # every response, in order (100 included)
    hits = 1                       # requests that reached the app
    close = false                  # must the server close afterwards?
    head = false                   # responses to HEAD: no body to read
    body = '...'                   # optional: the last response's body
    absent = ["CONTENT_LENGTH"]    # optional: environ keys the app must not see
    [expect.environ]               # optional: environ fields of the last hit
    PATH_INFO = "/x"

In ``request`` the file's own line breaks are ignored; bytes are written with escapes: ``\\r``
``\\n`` ``\\t`` ``\\0`` ``\\s`` (space) ``\\\\`` ``\\xHH``, and ``\\{TEXT*N}`` repeats TEXT N times.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Server, free_port, wait_for
from http_wire import WireReader, send_pieces
from tlscerts import make_authority

CORPUS = ROOT / "tests" / "requests"
CHUNKINGS = ("whole", "bytes", "lines")
SERVER_ARGS = (
    "-w", "2",
    "--limit-request-line", "200",
    "--limit-request-fields", "20",
    "--limit-request-field-size", "300",
    "--limit-request-body", "1000",
    "--header-timeout", "1.5",
    "--body-timeout", "1.5",
    "--keep-alive", "5",
    "recording_app:app",
)
PROBE = b"GET /__probe HTTP/1.1\r\nHost: probe\r\n\r\n"
_ESCAPE = re.compile(rb"\\(?:x([0-9A-Fa-f]{2})|\{([^}*]*)\*([0-9]+)\}|(.))", re.DOTALL)
_SIMPLE = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0", b"s": b" ", b"\\": b"\\"}


def decode_request(text: str) -> bytes:
    """The raw bytes a case's ``request`` text stands for (see the module docstring)."""
    source = text.replace("\r", "").replace("\n", "").encode("latin-1")

    def replace(match: re.Match[bytes]) -> bytes:
        hex_byte, repeated, times, simple = match.groups()
        if hex_byte is not None:
            return bytes([int(hex_byte, 16)])
        if repeated is not None:
            return repeated * int(times)
        if simple not in _SIMPLE:
            raise ValueError(f"unknown escape \\{simple.decode()}")
        return _SIMPLE[simple]

    return _ESCAPE.sub(replace, source)


@dataclass
class Case:
    name: str
    about: str
    request: bytes
    chunkings: tuple[str, ...]
    statuses: list[int]
    hits: int
    close: bool
    head: bool = False
    body: str | None = None
    environ: dict[str, Any] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path, mode: str = "buffered") -> Case:
        data = tomllib.loads(path.read_text())
        expect = dict(data["expect"])
        overrides = expect.pop("streaming", {})
        keys = {"statuses", "hits", "close", "head", "body", "environ", "absent"}
        unknown = (set(expect) | set(overrides)) - keys
        assert not unknown, f"{path.name}: unknown expect keys {unknown}"
        if mode == "streaming":
            expect.update(overrides)
        environ = dict(expect.get("environ", {}))
        if mode == "tls" and "wsgi.url_scheme" in environ:
            environ["wsgi.url_scheme"] = "https"
        if mode == "tls" and environ.get("SERVER_PORT") == "80":
            environ["SERVER_PORT"] = "443"  # the scheme's default port
        if mode == "proxy" and "REMOTE_ADDR" in environ:
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = "203.0.113.7", "5555"
        expect["environ"] = environ
        chunkings = tuple(data.get("chunkings", CHUNKINGS))
        assert set(chunkings) <= set(CHUNKINGS), f"{path.name}: bad chunkings {chunkings}"
        return cls(
            name=path.stem, about=data["about"], request=decode_request(data["request"]),
            chunkings=chunkings, statuses=expect["statuses"], hits=expect["hits"],
            close=expect["close"], head=expect.get("head", False), body=expect.get("body"),
            environ=expect.get("environ", {}), absent=expect.get("absent", []),
        )


def split(request: bytes, chunking: str) -> list[bytes]:
    if chunking == "whole":
        return [request]
    if chunking == "bytes":
        return [request[i:i + 1] for i in range(len(request))]
    pieces = re.split(rb"(?<=\r\n)", request)
    return [piece for piece in pieces if piece]


CASES = sorted(CORPUS.glob("*.toml"))
_FRAMING = re.compile(rb"content-length|transfer-encoding", re.IGNORECASE)


def _modes(path: Path) -> tuple[str, ...]:
    """Every case runs with request buffering on (the default), over TLS, and behind a PROXY v1
    header; a case with a body also with buffering off (``[expect.streaming]`` says what
    differs: e.g. a bad body is found before the app is called, or while it reads)."""
    body = ("streaming",) if _FRAMING.search(Case.load(path).request) else ()
    return ("buffered", *body, "tls", "proxy")


# TLS and PROXY runs take one chunking each, to keep the suite's time: over TLS a record per line
# (heads split across records and reads); behind PROXY a byte per send (the header split too).
MODE_CHUNKINGS = {"tls": ("lines",), "proxy": ("bytes",)}
PROXY_LINE = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n"
# llhttp's reader (--http-parser httptools) takes the whole corpus in every chunking, buffered: the
# other modes change what surrounds a complete head (the transport, who reads the body), not how
# it is read, and tests/http/test_llhttp_head.py holds both parsers to the same RequestHead.
PARSER_MODES = {"h11": ("buffered", "streaming", "tls", "proxy"), "httptools": ("buffered",)}


def _param_id(path: Path, chunking: str, mode: str, parser: str) -> str:
    return "-".join([path.stem, chunking, *([mode] if mode != "buffered" else []), *([parser] if parser != "h11" else [])])


PARAMS = [
    pytest.param(path, chunking, mode, parser, id=_param_id(path, chunking, mode, parser))
    for parser, modes in PARSER_MODES.items()
    for path in CASES
    for mode in _modes(path) if mode in modes
    for chunking in Case.load(path).chunkings
    if chunking in MODE_CHUNKINGS.get(mode, CHUNKINGS)
]


@pytest.fixture(scope="module")
def corpus_servers(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One server per buffering mode and parser, started when first needed."""
    servers: dict[tuple[str, str], tuple[Server, Path]] = {}

    def get(mode: str, parser: str) -> tuple[Server, Path]:
        if (mode, parser) not in servers:
            servers[mode, parser] = _start_corpus_server(tmp_path_factory, mode, parser)
        return servers[mode, parser]

    try:
        yield get
    finally:
        for server, _ in servers.values():
            server.stop()


def _start_corpus_server(tmp_path_factory: pytest.TempPathFactory, mode: str, parser: str) -> tuple[Server, Path]:
    hits = tmp_path_factory.mktemp("corpus") / "hits.jsonl"
    hits.touch()
    port = free_port()
    extra = {"streaming": ["--no-request-buffering"], "proxy": ["--proxy-protocol", "v1"]}.get(mode, [])
    if mode == "tls":
        pair = make_authority(tmp_path_factory.mktemp("corpus-ca")).issue("server", "localhost")
        extra = ["--certfile", str(pair.cert), "--keyfile", str(pair.key)]
    server = Server(["-b", f"127.0.0.1:{port}", "--http-parser", parser, *extra, *SERVER_ARGS],
                    env={"FORKSERVE_TEST_HITS": str(hits)},
                    address=("127.0.0.1", port))
    try:
        wait_for(lambda: _probe(server, mode), 15, message=f"the {mode} corpus server ({parser})")
    except BaseException:
        server.stop()
        raise
    return server, hits


def _connect(server: Server, mode: str) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=10)  # type: ignore[arg-type]
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if mode == "proxy":
        sock.sendall(PROXY_LINE)
    if mode == "tls":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context.wrap_socket(sock)
    return sock


def _probe(server: Server, mode: str) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"forkserve exited with {server.process.returncode}:\n{server.log()}")
    try:
        with _connect(server, mode) as sock:
            sock.sendall(PROBE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


def _hit_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_corpus_is_large_and_loads() -> None:
    assert len(CASES) >= 90, "the corpus lost cases"
    for path in CASES:
        Case.load(path)


@pytest.mark.parametrize(("path", "chunking", "mode", "parser"), PARAMS)
def test_request_case(corpus_servers: Any, path: Path, chunking: str, mode: str, parser: str) -> None:
    server, hits_file = corpus_servers(mode, parser)
    case = Case.load(path, mode)
    hits_before = len(_hit_lines(hits_file))
    log_before = len(server.log())

    with _connect(server, mode) as sock:
        client = "203.0.113.7:5555" if mode == "proxy" else f"127.0.0.1:{sock.getsockname()[1]}"
        send_pieces(sock, split(case.request, chunking), pause=0.001 if chunking == "lines" else 0.0)
        reader = WireReader(sock, timeout=10)
        responses = []
        for _ in case.statuses:
            try:
                responses.append(reader.response(head_request=case.head))
            except EOFError:
                break
        assert [r.status for r in responses] == case.statuses, f"{case.about}\n{responses}"

        for response in responses:
            if response.status >= 400:
                assert response.reason and response.reason != "Unknown", response
                assert response.header("Connection") == "close", response
                assert 0 < len(response.body) < 200, response

        if case.close:
            assert reader.closes(timeout=10), f"{case.about}: the connection stayed open"
        else:
            send_pieces(sock, [PROBE])
            probe = reader.response()
            assert (probe.status, probe.body) == (200, b"probe"), f"{case.about}: connection unusable"

    if case.body is not None:
        assert responses[-1].body.decode("latin-1") == case.body

    # The app records a hit before it answers, so every hit is on file by now.
    hits = _hit_lines(hits_file)[hits_before:]
    assert len(hits) == case.hits, f"{case.about}: app reached {len(hits)} times, want {case.hits}"
    if case.environ or case.absent:
        environ = json.loads(hits[-1])
        for key, wanted in case.environ.items():
            assert environ.get(key) == wanted, f"{key}: {environ.get(key)!r} != {wanted!r}"
        for key in case.absent:
            assert key not in environ, f"{key} should be absent, is {environ[key]!r}"

    log = _log_since(server, log_before, [r.status for r in responses if r.status >= 400], client)
    assert "Traceback" not in log, log


def _log_since(server: Server, offset: int, refusals: list[int], client: str) -> str:
    """The server's log written since ``offset``, once every refusal's info line is in it."""
    expected = [f"[INFO] refused request from {client}: {status} " for status in refusals
                if status != 500]

    deadline = time.monotonic() + 5
    while True:
        log = server.log()[offset:]
        if all(line in log for line in expected):
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"missing refusal log lines {expected} in:\n{log}")
        time.sleep(0.02)
