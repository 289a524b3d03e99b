"""URL routing: ``path()`` patterns with typed converters and a resolver.

Routes are written Django-style without the leading slash (``"items/<int:id>"``)
and matched against PATH_INFO with that slash removed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .exceptions import Http404

# converter name -> (regex for one match, function turning the text into a value)
CONVERTERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "int": (r"[0-9]+", int),
    "str": (r"[^/]+", str),
    "slug": (r"[-a-zA-Z0-9_]+", str),
    "path": (r".+", str),
}

_PLACEHOLDER_RE = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")


class Resolver404(Http404):
    """No URL pattern matched the requested path."""


@dataclass(frozen=True)
class ResolverMatch:
    """The outcome of resolving a path: which view to call and with what."""

    view: Callable[..., Any]
    kwargs: dict[str, Any]
    url_name: str | None
    route: str


@dataclass(frozen=True)
class URLPattern:
    """One compiled route."""

    route: str
    view: Callable[..., Any]
    name: str | None
    regex: re.Pattern[str]
    converters: dict[str, Callable[[str], Any]]

    def match(self, path: str) -> ResolverMatch | None:
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        kwargs = {
            key: self.converters[key](text) for key, text in found.groupdict().items()
        }
        return ResolverMatch(self.view, kwargs, self.name, self.route)


def path(route: str, view: Callable[..., Any], name: str | None = None) -> URLPattern:
    """Compile ``route`` once, at import time of the urlconf."""
    parts: list[str] = []
    converters: dict[str, Callable[[str], Any]] = {}
    position = 0
    for placeholder in _PLACEHOLDER_RE.finditer(route):
        kind = placeholder.group("converter") or "str"
        if kind not in CONVERTERS:
            raise ValueError(f"unknown path converter {kind!r} in route {route!r}")
        pattern, convert = CONVERTERS[kind]
        parts.append(re.escape(route[position : placeholder.start()]))
        parts.append(f"(?P<{placeholder.group('name')}>{pattern})")
        converters[placeholder.group("name")] = convert
        position = placeholder.end()
    parts.append(re.escape(route[position:]))
    return URLPattern(route, view, name, re.compile("".join(parts)), converters)


def resolve(path_info: str, urlpatterns: Sequence[URLPattern]) -> ResolverMatch:
    """Return the first matching pattern's view and kwargs, or raise Resolver404."""
    relative = path_info.removeprefix("/")
    for pattern in urlpatterns:
        match = pattern.match(relative)
        if match is not None:
            return match
    raise Resolver404(path_info)
