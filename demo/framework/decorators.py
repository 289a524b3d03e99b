"""View decorators."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .response import HttpResponseNotAllowed

View = TypeVar("View", bound=Callable[..., Any])


def require_methods(*methods: str) -> Callable[[View], View]:
    """Answer 405 (with an Allow header) for methods the view does not handle.

    HEAD is accepted wherever GET is: the server drops the body for HEAD.
    """
    allowed = {method.upper() for method in methods}
    if "GET" in allowed:
        allowed.add("HEAD")

    def decorator(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            if request.method not in allowed:
                return HttpResponseNotAllowed(sorted(allowed))
            return view(request, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def propagate_exceptions(view: View) -> View:
    """Let the view's exceptions escape the handler instead of becoming a 500 page.

    Used to exercise the WSGI server's own handling of a crashing application.
    """
    view.propagate_exceptions = True  # type: ignore[attr-defined]
    return view
