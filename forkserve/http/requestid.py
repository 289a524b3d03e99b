"""Request ids: one per request, shared by the app, the access log and the response.

A trusted peer (``forwarded_allow_ips``, e.g. the nginx in front) may send its own id in the
request header named by ``request_id_header`` (``X-Request-ID``); anyone else's is ignored, so a
client cannot plant ids in our logs. Otherwise the worker makes one: a random per-worker prefix and
a counter (``3f9a1c0e5b7d-1042``) — unique across workers and restarts for practical purposes (48
random bits per worker), and far cheaper than a uuid4 per request. The id is ``environ["forkserve.request_id"]`` and is echoed in the response header.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable
from typing import Any

from forkserve.http.proxy import ProxyTrust
from forkserve.http.response import Response

BeforeRequest = Callable[[dict[str, Any], Response, str], None]  # (environ, response, peer address)
ENVIRON_KEY = "forkserve.request_id"
DEFAULT_HEADER = "X-Request-ID"
# What we accept from a trusted peer: visible ASCII, bounded (it goes into a response header and
# into log lines).
_ACCEPTABLE = re.compile(r"[\x21-\x7e]{1,200}\Z")


class RequestIds:
    """Assigns the request id of each request a worker serves.

    ``assign`` is a closure over locals rather than a method: it runs on every request, and
    attribute lookups are most of what it would cost.
    """

    def __init__(self, header_name: str | None, proxy: ProxyTrust, prefix: str | None = None,
                 then: BeforeRequest | None = None) -> None:
        incoming = header_name or DEFAULT_HEADER
        environ_header = "HTTP_" + incoming.upper().replace("-", "_")
        echo_prefix = f"{header_name}: " if header_name else ""
        random_prefix = (prefix if prefix is not None else os.urandom(6).hex()) + "-"
        counter = itertools.count(1)
        acceptable = _ACCEPTABLE.match
        trusts = proxy.trusts

        def assign(environ: dict[str, Any], response: Response, peer: str) -> None:
            """The ServeContext.before_request callback: the id into the environ and the response."""
            request_id = environ.get(environ_header)
            if request_id is None or not acceptable(request_id) or not trusts(peer):
                # a fresh id: this worker's random prefix and its request count (str() is the
                # cheapest formatting: this runs on every request)
                request_id = random_prefix + str(next(counter))
            environ[ENVIRON_KEY] = request_id
            if echo_prefix:
                response.extra_head = echo_prefix + request_id + "\r\n"

        def assign_then(environ: dict[str, Any], response: Response, peer: str) -> None:
            assign(environ, response, peer)
            then(environ, response, peer)  # type: ignore[misc]

        self.assign = assign if then is None else assign_then


def before_request_hook(
    header_name: str | None, proxy: ProxyTrust, then: BeforeRequest | None = None
) -> BeforeRequest:
    """The ServeContext.before_request a worker installs (after fork: the random prefix is per
    process). ``then``, another before_request callback (e.g. the pre_request hook), runs after
    the id is set, so it sees it."""
    return RequestIds(header_name, proxy, then=then).assign
