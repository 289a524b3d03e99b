"""Request ids: one per request, shared by the app, the access log and the response.

A trusted peer (``forwarded_allow_ips``, e.g. the nginx in front) may send its own id in the
request header named by ``request_id_header`` (``X-Request-ID``); anyone else's is ignored, so a
client cannot plant ids in our logs. Otherwise the worker makes one: a random per-worker prefix and
a counter — unique across workers and restarts for practical purposes, and far cheaper than a uuid4
per request. The id is ``environ["forkserve.request_id"]`` and is echoed in the response header.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

from forkserve.http.response import Response
from forkserve.proxy import ProxyTrust

ENVIRON_KEY = "forkserve.request_id"
DEFAULT_HEADER = "X-Request-ID"
# What we accept from a trusted peer: visible ASCII, bounded (it goes into a response header and
# into log lines).
_ACCEPTABLE = re.compile(r"[\x21-\x7e]{1,200}\Z")


class RequestIds:
    """Assigns the request id of each request a worker serves."""

    def __init__(self, header_name: str | None, proxy: ProxyTrust, prefix: str | None = None) -> None:
        incoming = header_name or DEFAULT_HEADER
        self.environ_header = "HTTP_" + incoming.upper().replace("-", "_")
        self.echo_prefix = f"{header_name}: " if header_name else ""
        self.proxy = proxy
        self.prefix = prefix if prefix is not None else secrets.token_hex(6)
        self.counter = 0

    def assign(self, environ: dict[str, Any], response: Response, peer: str) -> None:
        """The ServeContext.before_request callback: set the id in the environ and the response."""
        request_id = environ.get(self.environ_header)
        if request_id is None or not _ACCEPTABLE.match(request_id) or not self.proxy.trusts(peer):
            self.counter += 1  # a fresh id: this worker's random prefix and its request count
            request_id = f"{self.prefix}{self.counter:08x}"
        environ[ENVIRON_KEY] = request_id
        if self.echo_prefix:
            response.extra_head = self.echo_prefix + request_id + "\r\n"


def before_request_hook(
    header_name: str | None, proxy: ProxyTrust
) -> Callable[[dict[str, Any], Response, str], None]:
    """The callback a worker installs (call it after fork: the random prefix is per process)."""
    return RequestIds(header_name, proxy).assign
