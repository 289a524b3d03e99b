"""The WSGI handler: environ in, middleware chain, view, response out.

The flow follows Django's ``WSGIHandler``: build a request, pass it through
new-style middleware (classes wrapping a ``get_response`` callable), resolve
the URL, call the view, and convert exceptions into error responses at every
layer so each middleware always sees a response, never an exception.
"""

from __future__ import annotations

import html
import importlib
import traceback
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

from .conf import import_string, settings
from .exceptions import HttpError, RequestTooLarge
from .request import HttpRequest
from .response import HttpResponse, HttpResponseBase
from .urls import resolve

GetResponse = Callable[[HttpRequest], HttpResponseBase]
StartResponse = Callable[..., Any]


def error_response(status: int, message: str, detail: str = "") -> HttpResponse:
    """A minimal HTML error page; ``detail`` (a traceback) only when DEBUG."""
    response = HttpResponse(status=status)
    title = f"{status} {response.reason_phrase}"
    extra = f"<pre>{html.escape(detail)}</pre>" if detail else ""
    response.content = (
        f"<!doctype html>\n<html><head><title>{title}</title></head>\n"
        f"<body><h1>{title}</h1><p>{html.escape(message)}</p>{extra}</body></html>\n"
    )
    return response


class _CloseThroughResponse:
    """File proxy given to ``wsgi.file_wrapper``.

    The server calls ``close()`` on the wrapper, which calls the file's
    ``close()``; routing that to ``response.close()`` runs every closer (the
    request's temp files too), not just the file's. All else is delegated,
    so ``fileno()``/``read()``/``tell()`` still allow sendfile.
    """

    def __init__(self, file: BinaryIO, close: Callable[[], None]) -> None:
        self._file = file
        self.close = close

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


class WSGIHandler:
    """The WSGI application callable."""

    request_class = HttpRequest

    def __init__(self) -> None:
        self._middleware_chain = self._load_middleware()

    def _load_middleware(self) -> GetResponse:
        """Wrap the view-calling core in each middleware, innermost last in the list."""
        handler: GetResponse = self._convert_exceptions(self._get_response)
        for dotted_path in reversed(settings.MIDDLEWARE):
            middleware = import_string(dotted_path)(handler)
            handler = self._convert_exceptions(middleware)
        return handler

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        request = self.request_class(environ)
        try:
            response = self._middleware_chain(request)
        except BaseException:
            request.close()
            raise
        response.add_closer(request.close)
        try:
            start_response(response.status_line, response.header_items())
            file = getattr(response, "file_to_stream", None)
            file_wrapper = environ.get("wsgi.file_wrapper")
            if file is not None and file_wrapper is not None:
                block_size = getattr(response, "block_size", 8192)
                proxy = _CloseThroughResponse(file, response.close)
                return file_wrapper(proxy, block_size)
        except BaseException:
            # The server never got an iterable to close, so clean up here.
            response.close()
            raise
        return response  # type: ignore[return-value]  # iterable with close()

    def _get_response(self, request: HttpRequest) -> HttpResponseBase:
        """Resolve the URL and run the view (the innermost layer of the chain)."""
        match = resolve(
            request.path_info,
            importlib.import_module(settings.ROOT_URLCONF).urlpatterns,
        )
        request.resolver_match = match
        request.propagate_exceptions = getattr(
            match.view, "propagate_exceptions", False
        )
        declared = request.content_length
        if declared is not None and declared > settings.MAX_UPLOAD_SIZE:
            raise RequestTooLarge("request body exceeds MAX_UPLOAD_SIZE")
        response = match.view(request, **match.kwargs)
        if not isinstance(response, HttpResponseBase):
            raise TypeError(
                f"view {match.view.__name__} returned {response!r}, not a response"
            )
        return response

    def _convert_exceptions(self, get_response: GetResponse) -> GetResponse:
        """Wrap one layer so any exception it raises becomes an error response."""

        def inner(request: HttpRequest) -> HttpResponseBase:
            try:
                return get_response(request)
            except Exception as exc:
                if request.propagate_exceptions:
                    raise
                return self._response_for_exception(request, exc)

        return inner

    def _response_for_exception(
        self, request: HttpRequest, exc: Exception
    ) -> HttpResponseBase:
        if isinstance(exc, HttpError) and exc.status_code == 404:
            return error_response(
                404, f"The requested URL {request.path} was not found."
            )
        if isinstance(exc, HttpError):
            return error_response(exc.status_code, str(exc) or type(exc).__name__)
        trace = "".join(traceback.format_exception(exc))
        errors = request.environ.get("wsgi.errors")
        if errors is not None:
            errors.write(
                f"Internal Server Error: {request.method} {request.path}\n{trace}"
            )
            errors.flush()
        detail = trace if settings.DEBUG else ""
        return error_response(500, "The server encountered an internal error.", detail)
