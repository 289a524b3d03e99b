"""Trusting forwarding headers only from trusted peers.

Behind nginx, the peer is the proxy; the client's address and scheme arrive in forwarding
headers: ``X-Forwarded-For`` with ``X-Forwarded-Proto`` / ``X-Forwarded-Ssl`` (the names and
values in ``secure_scheme_headers``), or the standard ``Forwarded`` (RFC 7239). Anyone can send
those headers, so they count only when the peer is in ``forwarded_allow_ips`` (unix-socket peers
are local processes and are trusted, as gunicorn does); from any other peer they are ignored.

From a trusted peer:

- ``wsgi.url_scheme`` follows the secure scheme headers; if they contradict each other the
  request is refused (400), as gunicorn does.
- ``REMOTE_ADDR`` becomes the nearest address in ``X-Forwarded-For`` that is not itself a
  trusted proxy (the leftmost when all are trusted). A hop that is not an IP address
  (``unknown``, an obfuscated name) leaves ``REMOTE_ADDR`` as the peer's. ``REMOTE_PORT`` is the
  hop's port when it names one, else "0".
- ``Forwarded`` counts only when the request carries none of those X- headers: then the same
  walk runs over its elements' ``for=``, and the chosen element's ``proto=`` sets the scheme.

One family or the other, never a mix: a proxy that sets X-Forwarded-For but passes a client's
``Forwarded`` through untouched (nginx does, by default) must not let the client choose the
scheme. A malformed ``Forwarded`` header is ignored.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from forkserve.http.errors import HttpError

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PAIR = re.compile(
    rf'[ \t]*({_TOKEN})=({_TOKEN}|"(?:[^"\\]|\\.)*")[ \t]*([;,]|\Z)'
)


class ProxyTrust:
    """The trust decision and the environ rewrite for one worker's settings."""

    def __init__(self, allowed: list[str], secure_scheme_headers: dict[str, str]) -> None:
        self.trust_all = "*" in allowed
        self.networks = [ipaddress.ip_network(item, strict=False) for item in allowed if item != "*"]
        self.scheme_keys = [
            ("HTTP_" + name.upper().replace("-", "_"), wanted.lower())
            for name, wanted in secure_scheme_headers.items()
        ]
        # The environ keys apply() looks at: a request carrying none of them skips it.
        self.keys = frozenset(
            [key for key, _ in self.scheme_keys] + ["HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED"]
        )
        self._verdicts: dict[str, bool] = {}

    def trusts(self, address: str) -> bool:
        """Is this peer address trusted? (Cached: the same proxies connect over and over.)"""
        verdict = self._verdicts.get(address)
        if verdict is None:
            verdict = self._decide(address)
            if len(self._verdicts) < 4096:
                self._verdicts[address] = verdict
        return verdict

    def _decide(self, address: str) -> bool:
        if self.trust_all or address == "":
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def apply(self, environ: dict[str, Any]) -> None:
        """Rewrite scheme and client address from forwarding headers, if the peer is trusted."""
        if not self.trusts(environ["REMOTE_ADDR"]):
            return
        scheme = self._scheme(environ)
        client: tuple[str, str] | None = None
        forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded_for:
            client = self._nearest_client([node_address(hop) for hop in forwarded_for.split(",")])[0]
        elif scheme is None and "HTTP_FORWARDED" in environ:
            elements = parse_forwarded(environ["HTTP_FORWARDED"])
            if elements:
                client, index = self._nearest_client([node_address(e.get("for", "")) for e in elements])
                proto = elements[index].get("proto", "").lower()
                if proto in ("http", "https"):
                    scheme = proto
        if scheme is not None:
            environ["wsgi.url_scheme"] = scheme
        if client is not None:
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client

    def _scheme(self, environ: dict[str, Any]) -> str | None:
        """The scheme the secure scheme headers claim; None when none of them is present."""
        scheme = None
        for key, wanted in self.scheme_keys:
            value = environ.get(key)
            if value is not None:
                claimed = "https" if value.strip().lower() == wanted else "http"
                if scheme is not None and claimed != scheme:
                    raise HttpError(400, "contradictory scheme headers from a trusted proxy")
                scheme = claimed
        return scheme

    def _nearest_client(self, hops: list[tuple[str, str] | None]) -> tuple[tuple[str, str] | None, int]:
        """The rightmost hop that is not a trusted proxy (the leftmost if all are trusted), and
        its index. A hop that is not an address (None) is never trusted and yields no client."""
        for index in range(len(hops) - 1, -1, -1):
            hop = hops[index]
            if hop is None or not self.trusts(hop[0]):
                return hop, index
        return (hops[0] if hops else None), 0


def node_address(text: str) -> tuple[str, str] | None:
    """(address, port) from a forwarding hop: ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``,
    ``[2001:db8::1]:80``; None for anything else (``unknown``, obfuscated names, garbage)."""
    text = text.strip()
    port = ""
    if text.startswith("["):
        address, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return None
        port = rest[1:]
    elif text.count(":") == 1:
        address, _, port = text.partition(":")
        if not port.isdigit():
            return None
    else:
        address = text
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None
    return address, port or "0"


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """The elements of a ``Forwarded`` header (RFC 7239), each a dict of lower-case parameter
    names to unquoted values; [] when the header is malformed."""
    elements: list[dict[str, str]] = [{}]
    position = 0
    while position < len(value):
        match = _PAIR.match(value, position)
        if match is None:
            return []
        name, raw, separator = match.groups()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        elements[-1][name.lower()] = raw
        position = match.end()
        if separator == ",":
            elements.append({})
            while value[position:position + 1] in (" ", "\t"):
                position += 1
    return elements if elements[-1] else []
