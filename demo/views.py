"""The demo views. Each one exercises a different part of a WSGI server."""

from __future__ import annotations

import hashlib
import html
import math
import tempfile
import time
from collections.abc import Iterable, Iterator

from .framework.decorators import propagate_exceptions, require_methods
from .framework.exceptions import BadRequest
from .framework.request import HttpRequest
from .framework.response import (
    FileResponse,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
    redirect,
)

TEXT = "text/plain; charset=utf-8"
MIB = 1024 * 1024
CHUNK_SIZE = 64 * 1024
# 64 KiB of 0x00..0xff repeated: /download content is predictable by clients.
DOWNLOAD_PATTERN = bytes(range(256)) * 256

PAGES = [
    ("/hello", "plain-text greeting (cheap; for benchmarks)"),
    ("/hello/w%C3%B6rld", "greeting from a path converter (UTF-8 path)"),
    ("/json?a=1&a=2&b=x", "JSON describing the request"),
    ("/echo", "form that echoes submitted fields as JSON"),
    ("/stream?chunks=5&delay=0.5", "streamed response, one line per chunk"),
    ("/download?size=1048576", "file download with X-Content-SHA256"),
    ("/cookies", "sets two cookies, shows the ones sent"),
    ("/sleep?seconds=1", "sleeps, then answers"),
    ("/redirect", "302 redirect to /hello"),
    ("/error", "view raises; framework 500 page"),
    ("/crash", "view raises; exception propagates to the server"),
    ("/environ", "the WSGI environ as JSON"),
]


def _number(
    request: HttpRequest, name: str, default: float, low: float, high: float
) -> float:
    """A query parameter as a number clamped to [low, high]; 400 if not a number."""
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be a number") from None
    if not math.isfinite(value):
        raise BadRequest(f"query parameter {name!r} must be finite")
    return min(max(value, low), high)


def _digest(chunks: Iterable[bytes]) -> tuple[int, str]:
    """Size and SHA-256 of a byte stream, consumed one chunk at a time."""
    sha, size = hashlib.sha256(), 0
    for chunk in chunks:
        sha.update(chunk)
        size += len(chunk)
    return size, sha.hexdigest()


@require_methods("GET")
def index(request: HttpRequest) -> HttpResponse:
    items = "\n".join(
        f'<li><a href="{html.escape(url)}">{html.escape(url)}</a> - {html.escape(text)}</li>'
        for url, text in PAGES
    )
    return HttpResponse(
        "<!doctype html>\n<html><head><title>forkserve demo</title></head>\n"
        f"<body><h1>forkserve demo</h1>\n<ul>\n{items}\n</ul>\n"
        "<p>POST /upload takes a multipart <code>file</code> field or a raw body.</p>"
        "</body></html>\n"
    )


@require_methods("GET")
def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"Hello, world!", content_type=TEXT)


@require_methods("GET")
def hello_name(request: HttpRequest, name: str) -> HttpResponse:
    return HttpResponse(f"Hello, {name}!", content_type=TEXT)


@require_methods("GET")
def json_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "message": "hello",
            "method": request.method,
            "path": request.path,
            "query": request.GET.to_dict(),
            "remote_addr": request.META.get("REMOTE_ADDR"),
            "scheme": request.scheme,
            "host": request.get_host(),
        }
    )


ECHO_FORM = """<!doctype html>
<html><head><title>echo</title></head><body><h1>echo</h1>
<form method="post"><input name="name" value="world">
<button>Send (urlencoded)</button></form>
<form method="post" enctype="multipart/form-data"><input name="name" value="world">
<input type="file" name="attachment"><button>Send (multipart)</button></form>
</body></html>
"""


@require_methods("GET", "POST")
def echo(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponse(ECHO_FORM)
    files = {
        name: [
            {"filename": f.filename, "size": f.size, "content_type": f.content_type}
            for f in uploads
        ]
        for name, uploads in request.FILES.lists()
    }
    return JsonResponse({"fields": request.POST.to_dict(), "files": files})


@require_methods("POST")
def upload(request: HttpRequest) -> JsonResponse:
    """Hash an upload without holding it in memory: spooled parts or the raw stream."""
    if request.content_type == "multipart/form-data":
        uploaded = request.FILES.get("file")
        if uploaded is None:
            return JsonResponse(
                {"error": "multipart upload needs a 'file' field"}, status=400
            )
        size, sha256 = _digest(uploaded.chunks())
        filename: str | None = uploaded.filename
    else:
        size, sha256 = _digest(iter(lambda: request.stream.read(CHUNK_SIZE), b""))
        filename = request.headers.get("X-Filename")
    return JsonResponse({"size": size, "sha256": sha256, "filename": filename})


@require_methods("GET")
def stream(request: HttpRequest) -> StreamingHttpResponse:
    count = int(_number(request, "chunks", 5, 0, 10_000))
    delay = _number(request, "delay", 0.0, 0.0, 5.0)

    def lines() -> Iterator[str]:
        for i in range(count):
            if i and delay:
                time.sleep(delay)
            yield f"chunk {i}\n"

    return StreamingHttpResponse(lines(), content_type=TEXT)


@require_methods("GET")
def download(request: HttpRequest) -> FileResponse:
    """Serve a generated temp file, hashed as it is written."""
    size = int(_number(request, "size", MIB, 0, 100 * MIB))
    file = tempfile.TemporaryFile()  # noqa: SIM115 - FileResponse closes it
    sha = hashlib.sha256()
    remaining = size
    while remaining:
        block = DOWNLOAD_PATTERN[:remaining]
        file.write(block)
        sha.update(block)
        remaining -= len(block)
    file.flush()
    file.seek(0)
    response = FileResponse(file, as_attachment=True, filename="download.bin")
    response["X-Content-SHA256"] = sha.hexdigest()
    return response


@require_methods("GET")
def cookies(request: HttpRequest) -> JsonResponse:
    response = JsonResponse({"cookies": request.COOKIES})
    response.set_cookie(
        "demo_session", "abc123", max_age=3600, httponly=True, samesite="Lax"
    )
    response.set_cookie("demo_theme", "dark")
    return response


@require_methods("GET")
def slow_view_sleeping(request: HttpRequest) -> HttpResponse:
    """Sleep in a frame with a findable name, for server timeout/stack-dump tests."""
    seconds = _number(request, "seconds", 1.0, 0.0, 120.0)
    time.sleep(seconds)
    return HttpResponse(f"slept {seconds:g} seconds\n", content_type=TEXT)


@require_methods("GET")
def redirect_view(request: HttpRequest) -> HttpResponseBase:
    return redirect("/hello")


def error(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("demo error")


@propagate_exceptions
def crash(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("demo crash: propagated to the server")


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, tuple) and all(isinstance(v, (str, int)) for v in value):
        return list(value)
    return repr(value)


@require_methods("GET")
def environ_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {key: _jsonable(value) for key, value in sorted(request.environ.items())}
    )
