"""In-process tests for the demo WSGI application (``demo.wsgi:application``).

Every request goes through ``wsgiref.validate.validator`` so a PEP 3333
violation by the demo fails the test, not just a wrong status or body.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes
from wsgiref.util import FileWrapper, setup_testing_defaults
from wsgiref.validate import validator

import pytest

import demo.settings
from demo.framework.handler import WSGIHandler
from demo.framework.multipart import MultipartError, MultipartParser
from demo.framework.request import HttpRequest
from demo.framework.response import HttpResponse, StreamingHttpResponse
from demo.framework.urls import Resolver404, path, resolve
from demo.wsgi import application

pytestmark = pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning")

BOUNDARY = "----demoBoundary7MA4YWxkTrZu0gW"


class TrickleInput(io.BytesIO):
    """wsgi.input that hands out at most a few bytes per read, like a slow socket."""

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return super().read()
        return super().read(min(size, 7))


def make_environ(
    url: str = "/",
    method: str = "GET",
    body: bytes = b"",
    content_type: str | None = None,
    headers: dict[str, str] | None = None,
    chunked: bool = False,
    wsgi_input: io.BytesIO | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build an environ the way a server would: latin-1 PATH_INFO, HTTP_* headers."""
    path_part, _, query = url.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path_part).decode("latin-1"),
        "QUERY_STRING": query,
        "REMOTE_ADDR": "192.0.2.7",
        "wsgi.input": wsgi_input if wsgi_input is not None else io.BytesIO(body),
    }
    if chunked:
        environ["wsgi.input_terminated"] = True
    elif body:
        environ["CONTENT_LENGTH"] = str(len(body))
    if content_type:
        environ["CONTENT_TYPE"] = content_type
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    environ.update(extra)
    setup_testing_defaults(environ)
    return environ


@dataclass
class Result:
    status: str
    headers: list[tuple[str, str]]
    chunks: list[bytes]
    errors: str
    input: Any = None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def code(self) -> int:
        return int(self.status.split()[0])

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def call(environ: dict[str, Any], app: Any = application) -> Result:
    """Run one request through the validator-wrapped app, always closing the body."""
    errors, raw_input = environ["wsgi.errors"], environ["wsgi.input"]
    captured: dict[str, Any] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        captured["status"], captured["headers"] = status, headers
        return lambda data: pytest.fail("the demo must not use write()")

    result = validator(app)(environ, start_response)
    try:
        chunks = list(result)
    finally:
        result.close()
    return Result(
        captured["status"], captured["headers"], chunks, errors.getvalue(), raw_input
    )


def get(url: str, **kwargs: Any) -> Result:
    return call(make_environ(url, **kwargs))


def multipart_body(
    fields: list[tuple[str, str]] = (), files: list[tuple[str, str, bytes, str]] = ()
) -> tuple[bytes, str]:
    parts = []
    for name, value in fields:
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for name, filename, data, ctype in files:
        head = (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; "
            f'name="{name}"; filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={BOUNDARY}"


def awkward_bytes(size: int) -> bytes:
    """Deterministic data salted with near-boundaries to trip a naive splitter."""
    chunk = (
        hashlib.sha256(b"seed").digest() * 64
        + b"\r\n--"
        + BOUNDARY[:-1].encode()
        + b"\r\n"
    )
    return (chunk * (size // len(chunk) + 1))[:size]


# --- simple routes ---------------------------------------------------------


def test_index_lists_pages_and_runs_middleware() -> None:
    result = get("/")
    assert result.status == "200 OK"
    assert result.header("Content-Type") == "text/html; charset=utf-8"
    for link in (
        "/hello",
        "/json",
        "/echo",
        "/stream",
        "/download",
        "/cookies",
        "/environ",
    ):
        assert f'href="{link}'.encode() in result.body
    assert result.header("X-Demo-Middleware") == "1"
    assert result.header("X-Content-Type-Options") == "nosniff"
    assert float(result.header("X-Request-Duration-Ms")) >= 0


def test_hello_is_plain_text_with_content_length() -> None:
    result = get("/hello")
    assert result.status == "200 OK"
    assert result.body == b"Hello, world!"
    assert result.header("Content-Type") == "text/plain; charset=utf-8"
    assert result.header("Content-Length") == "13"


def test_head_is_allowed_where_get_is() -> None:
    assert get("/hello", method="HEAD").status == "200 OK"


def test_wrong_method_gets_405_with_allow() -> None:
    result = get("/hello", method="DELETE")
    assert result.status == "405 Method Not Allowed"
    assert result.header("Allow") == "GET, HEAD"


def test_path_info_is_decoded_from_latin1_wire_bytes_as_utf8() -> None:
    result = get("/hello/w%C3%B6rld")
    assert result.body == "Hello, wörld!".encode()


def test_json_describes_request() -> None:
    result = get("/json?a=1&a=2&b=%C3%A9&c=", **{"wsgi.url_scheme": "https"})
    assert result.header("Content-Type") == "application/json"
    assert result.json() == {
        "message": "hello",
        "method": "GET",
        "path": "/json",
        "query": {"a": ["1", "2"], "b": "é", "c": ""},
        "remote_addr": "192.0.2.7",
        "scheme": "https",
        "host": "127.0.0.1",
    }


def test_path_includes_script_name() -> None:
    assert get("/json", SCRIPT_NAME="/app").json()["path"] == "/app/json"


def test_redirect() -> None:
    result = get("/redirect")
    assert result.status == "302 Found"
    assert result.header("Location") == "/hello"


def test_not_found_page_escapes_path() -> None:
    result = get("/no/<such>/page")
    assert result.status == "404 Not Found"
    assert result.header("Content-Type") == "text/html; charset=utf-8"
    assert b"<h1>404 Not Found</h1>" in result.body
    assert b"&lt;such&gt;" in result.body and b"<such>" not in result.body


def test_environ_dump() -> None:
    data = get("/environ?x=1", headers={"X-Probe": "yes"}).json()
    assert data["REQUEST_METHOD"] == "GET"
    assert data["QUERY_STRING"] == "x=1"
    assert data["HTTP_X_PROBE"] == "yes"
    assert data["wsgi.url_scheme"] == "http"
    assert data["wsgi.version"] == [1, 0]
    assert isinstance(data["wsgi.input"], str)  # not serialisable: repr'd


# --- forms and uploads -----------------------------------------------------


def test_echo_get_shows_form() -> None:
    result = get("/echo")
    assert result.status == "200 OK"
    assert b"<form" in result.body and b'enctype="multipart/form-data"' in result.body


def test_echo_urlencoded() -> None:
    body = b"name=J%C3%BCrgen&tag=a&tag=b&empty="
    result = get(
        "/echo",
        method="POST",
        body=body,
        content_type="application/x-www-form-urlencoded",
    )
    assert result.json() == {
        "fields": {"name": "Jürgen", "tag": ["a", "b"], "empty": ""},
        "files": {},
    }


def test_echo_multipart_fields_and_file() -> None:
    body, ctype = multipart_body(
        [("name", "wörld"), ("tag", "x"), ("tag", "y")],
        [("attachment", "C:\\Users\\me\\notes.txt", b"hi there", "text/plain")],
    )
    result = get("/echo", method="POST", body=body, content_type=ctype)
    assert result.json() == {
        "fields": {"name": "wörld", "tag": ["x", "y"]},
        "files": {
            "attachment": [
                {"filename": "notes.txt", "size": 8, "content_type": "text/plain"}
            ]
        },
    }


def test_upload_multipart_checksum_with_trickling_input() -> None:
    data = awkward_bytes(3 * 1024 * 1024 + 123)
    body, ctype = multipart_body(
        [("note", "x")], [("file", "big.bin", data, "application/octet-stream")]
    )
    environ = make_environ(
        "/upload", method="POST", content_type=ctype, wsgi_input=TrickleInput(body)
    )
    environ["CONTENT_LENGTH"] = str(len(body))
    result = call(environ)
    assert result.status == "200 OK"
    assert result.json() == {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "filename": "big.bin",
    }


def test_upload_raw_body_never_reads_past_content_length() -> None:
    data = awkward_bytes(200_000)
    stream = io.BytesIO(data + b"GET /next-request HTTP/1.1\r\n")
    environ = make_environ(
        "/upload",
        method="POST",
        content_type="application/octet-stream",
        wsgi_input=stream,
        headers={"X-Filename": "raw.bin"},
    )
    environ["CONTENT_LENGTH"] = str(len(data))
    result = call(environ)
    assert result.json() == {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "filename": "raw.bin",
    }
    assert stream.tell() == len(data)


def test_upload_chunked_body_reads_until_eof() -> None:
    data = awkward_bytes(150_001)
    result = get("/upload", method="POST", body=data, chunked=True)
    assert result.status == "200 OK"
    assert result.json()["size"] == len(data)
    assert result.json()["sha256"] == hashlib.sha256(data).hexdigest()


def test_multipart_upload_with_chunked_input() -> None:
    data = awkward_bytes(70_000)
    body, ctype = multipart_body(
        files=[("file", "c.bin", data, "application/octet-stream")]
    )
    result = get("/upload", method="POST", body=body, content_type=ctype, chunked=True)
    assert result.json()["sha256"] == hashlib.sha256(data).hexdigest()


def test_body_without_length_or_terminated_input_is_empty() -> None:
    environ = make_environ("/upload", method="POST", wsgi_input=io.BytesIO(b"ignored"))
    result = call(environ)
    assert result.json()["size"] == 0
    assert result.input.tell() == 0


def test_upload_without_file_field_is_400() -> None:
    body, ctype = multipart_body([("other", "x")])
    result = get("/upload", method="POST", body=body, content_type=ctype)
    assert result.code == 400


def test_truncated_multipart_is_400() -> None:
    body, ctype = multipart_body(
        files=[("file", "a.bin", b"x" * 1000, "application/octet-stream")]
    )
    result = get("/upload", method="POST", body=body[:500], content_type=ctype)
    assert result.status == "400 Bad Request"


def test_declared_body_over_max_upload_size_is_413_without_reading(monkeypatch) -> None:
    monkeypatch.setattr(demo.settings, "MAX_UPLOAD_SIZE", 100)
    result = get("/upload", method="POST", body=b"x" * 1000)
    assert result.code == 413
    assert result.input.tell() == 0


def test_streamed_body_over_max_upload_size_is_413(monkeypatch) -> None:
    monkeypatch.setattr(demo.settings, "MAX_UPLOAD_SIZE", 100)
    assert get("/upload", method="POST", body=b"x" * 1000, chunked=True).code == 413


def test_form_body_over_memory_limit_is_413(monkeypatch) -> None:
    monkeypatch.setattr(demo.settings, "DATA_UPLOAD_MAX_MEMORY_SIZE", 10)
    body = b"name=" + b"x" * 100
    result = get(
        "/echo",
        method="POST",
        body=body,
        content_type="application/x-www-form-urlencoded",
    )
    assert result.code == 413


def test_multipart_parser_spools_large_files_to_disk() -> None:
    small, big = b"s" * 100, awkward_bytes(50_000)
    body, _ = multipart_body(
        files=[("a", "s.bin", small, "x/y"), ("b", "b.bin", big, "x/y")]
    )
    parser = MultipartParser(
        io.BytesIO(body), BOUNDARY, spool_threshold=10_000, chunk_size=4096
    )
    _fields, files = parser.parse()
    assert files["a"].read() == small and not files["a"].file._rolled
    assert b"".join(files["b"].chunks()) == big and files["b"].file._rolled
    for upload in (files["a"], files["b"]):
        upload.close()


@pytest.mark.parametrize("chunk_size", [1, 3, 47, 65536])
def test_multipart_parser_finds_boundaries_across_reads(chunk_size: int) -> None:
    data = awkward_bytes(3000)
    body, _ = multipart_body([("f", "v1"), ("f", "")], [("file", "x.bin", data, "a/b")])
    fields, files = MultipartParser(
        io.BytesIO(body), BOUNDARY, chunk_size=chunk_size
    ).parse()
    assert fields.getlist("f") == ["v1", ""]
    assert files["file"].read() == data


def test_multipart_parser_rejects_missing_close() -> None:
    body = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue".encode()
    )
    with pytest.raises(MultipartError):
        MultipartParser(io.BytesIO(body), BOUNDARY).parse()


# --- streaming, files, cookies ---------------------------------------------


def test_stream_yields_one_chunk_per_line() -> None:
    result = get("/stream?chunks=4")
    assert result.status == "200 OK"
    assert result.chunks == [b"chunk 0\n", b"chunk 1\n", b"chunk 2\n", b"chunk 3\n"]
    assert result.header("Content-Length") is None


def test_stream_defaults_and_clamps() -> None:
    assert len(get("/stream").chunks) == 5
    assert len(get("/stream?chunks=99999999").chunks) == 10_000
    assert get("/stream?chunks=lots").code == 400


def test_stream_produces_chunks_lazily(monkeypatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    environ = make_environ("/stream?chunks=3&delay=99")
    body = application(environ, lambda status, headers, exc_info=None: None)
    iterator = iter(body)
    assert next(iterator) == b"chunk 0\n" and sleeps == []
    assert next(iterator) == b"chunk 1\n" and sleeps == [5.0]  # delay clamped to 5
    body.close()


def test_download_without_file_wrapper() -> None:
    result = get("/download?size=300000")
    assert result.status == "200 OK"
    assert len(result.body) == 300000
    assert result.header("Content-Length") == "300000"
    assert result.header("Content-Type") == "application/octet-stream"
    assert result.header("X-Content-SHA256") == hashlib.sha256(result.body).hexdigest()
    assert result.body[:4] == b"\x00\x01\x02\x03"


def test_download_default_size_through_validator_with_file_wrapper() -> None:
    result = get("/download", **{"wsgi.file_wrapper": FileWrapper})
    assert len(result.body) == 1024 * 1024
    assert result.header("X-Content-SHA256") == hashlib.sha256(result.body).hexdigest()


def test_download_uses_file_wrapper_and_close_reaches_the_file() -> None:
    environ = make_environ("/download?size=10", **{"wsgi.file_wrapper": FileWrapper})
    body = application(environ, lambda status, headers, exc_info=None: None)
    assert isinstance(body, FileWrapper)
    real_file = body.filelike._file
    os.fstat(body.filelike.fileno())  # a real descriptor, usable by sendfile()
    assert b"".join(body) == bytes(range(10))
    body.close()
    assert real_file.closed


def test_cookies_sets_two_and_shows_received() -> None:
    result = get("/cookies", headers={"Cookie": 'a=1; b="two words"; junk; c=3'})
    assert result.json() == {"cookies": {"a": "1", "b": "two words", "c": "3"}}
    cookies = result.all("Set-Cookie")
    assert len(cookies) == 2
    session = next(c for c in cookies if c.startswith("demo_session=abc123"))
    assert (
        "HttpOnly" in session
        and "Max-Age=3600" in session
        and "SameSite=Lax" in session
    )
    assert any(c.startswith("demo_theme=dark") and "HttpOnly" not in c for c in cookies)


def test_sleep_sleeps_in_a_named_frame(monkeypatch) -> None:
    frames: list[str] = []
    monkeypatch.setattr(
        time, "sleep", lambda s: frames.append(sys._getframe(1).f_code.co_name)
    )
    result = get("/sleep?seconds=500")
    assert result.body == b"slept 120 seconds\n"
    assert frames == ["slow_view_sleeping"]
    assert get("/sleep?seconds=0").status == "200 OK"


# --- errors ----------------------------------------------------------------


def test_error_becomes_logged_500_page() -> None:
    result = get("/error")
    assert result.status == "500 Internal Server Error"
    assert b"<h1>500 Internal Server Error</h1>" in result.body
    assert b"demo error" not in result.body  # no traceback unless DEBUG
    assert "Traceback" in result.errors and "RuntimeError: demo error" in result.errors
    assert result.header("X-Demo-Middleware") == "1"  # middleware still saw a response


def test_error_page_shows_traceback_in_debug(monkeypatch) -> None:
    monkeypatch.setattr(demo.settings, "DEBUG", True)
    assert b"RuntimeError: demo error" in get("/error").body


def test_crash_propagates_to_the_server() -> None:
    started: list[str] = []
    environ = make_environ("/crash")
    with pytest.raises(RuntimeError, match="demo crash"):
        validator(application)(
            environ, lambda status, headers, exc_info=None: started.append(status)
        )
    assert started == []


# --- framework pieces and resource cleanup ---------------------------------

events: list[str] = []
uploads: list[Any] = []


def _streaming_view(request: HttpRequest) -> StreamingHttpResponse:
    def gen():
        try:
            yield b"one"
            yield b"two"
        finally:
            events.append("generator closed")

    return StreamingHttpResponse(gen())


def _closer_view(request: HttpRequest) -> HttpResponse:
    uploads.extend(request.FILES.values())
    response = HttpResponse(b"ok", content_type="text/plain")
    response.add_closer(lambda: events.append("closer ran"))
    return response


urlpatterns = [path("gen", _streaming_view), path("closer", _closer_view)]


@pytest.fixture
def local_app(monkeypatch) -> WSGIHandler:
    """A handler whose urlconf is this test module."""
    monkeypatch.setattr(demo.settings, "ROOT_URLCONF", __name__)
    events.clear()
    uploads.clear()
    return WSGIHandler()


def test_close_runs_generator_cleanup_when_abandoned(local_app: WSGIHandler) -> None:
    body = validator(local_app)(make_environ("/gen"), lambda s, h, e=None: None)
    assert next(iter(body)) == b"one"
    assert events == []
    body.close()
    assert events == ["generator closed"]


def test_close_runs_closers_and_deletes_request_uploads(local_app: WSGIHandler) -> None:
    body_bytes, ctype = multipart_body(files=[("f", "a.txt", b"abc", "text/plain")])
    result = call(
        make_environ("/closer", method="POST", body=body_bytes, content_type=ctype),
        local_app,
    )
    assert result.body == b"ok"
    assert events == ["closer ran"]
    assert uploads and all(upload.file.closed for upload in uploads)


def test_resolver_converters() -> None:
    patterns = [
        path("items/<int:item_id>", "item-view"),
        path("u/<name>/<path:rest>", "u-view"),
    ]
    match = resolve("/items/42", patterns)
    assert (match.view, match.kwargs) == ("item-view", {"item_id": 42})
    assert resolve("/u/bob/a/b.txt", patterns).kwargs == {
        "name": "bob",
        "rest": "a/b.txt",
    }
    with pytest.raises(Resolver404):
        resolve("/items/abc", patterns)


def test_request_headers_are_case_insensitive() -> None:
    request = HttpRequest(
        make_environ("/", headers={"X-Thing": "1"}, content_type="text/plain")
    )
    assert request.headers["x-thing"] == request.headers["X-THING"] == "1"
    assert request.headers["content-type"] == "text/plain"
    assert request.get_host() == "127.0.0.1"
