"""Trusting forwarding headers only from trusted peers.

Behind nginx, the peer is the proxy; the client's address and scheme arrive in ``X-Forwarded-For``
and ``X-Forwarded-Proto`` (or ``X-Forwarded-Ssl``). Anyone can send those headers, so they count
only when the peer is in ``forwarded_allow_ips`` (unix-socket peers are local processes and are
trusted, as gunicorn does). Then ``wsgi.url_scheme`` follows ``secure_scheme_headers`` and
``REMOTE_ADDR`` becomes the nearest untrusted address in ``X-Forwarded-For``.
"""

from __future__ import annotations

import ipaddress
from typing import Any


class ProxyTrust:
    """The trust decision and the environ rewrite for one worker's settings."""

    def __init__(self, allowed: list[str], secure_scheme_headers: dict[str, str]) -> None:
        self.trust_all = "*" in allowed
        self.networks = [ipaddress.ip_network(item, strict=False) for item in allowed if item != "*"]
        self.scheme_keys = [
            ("HTTP_" + name.upper().replace("-", "_"), wanted.lower())
            for name, wanted in secure_scheme_headers.items()
        ]
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
        for key, wanted in self.scheme_keys:
            value = environ.get(key)
            if value is not None:
                environ["wsgi.url_scheme"] = "https" if value.strip().lower() == wanted else "http"
                break
        forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded_for:
            client = self._client_from_chain(forwarded_for)
            if client:
                environ["REMOTE_ADDR"] = client
                environ["REMOTE_PORT"] = "0"

    def _client_from_chain(self, chain: str) -> str | None:
        """The rightmost address not itself a trusted proxy (the leftmost if all are trusted)."""
        hops = [hop.strip() for hop in chain.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = hop.strip("[]")
            if not self.trusts(address):
                return address if _is_ip(address) else None
        return hops[0].strip("[]") if hops and _is_ip(hops[0].strip("[]")) else None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
