"""What sits between a connection's socket and HTTP: a PROXY protocol header, then TLS.

Both run in the loop, on the bytes the loop read, before anything reaches the request parser —
never in front of the app, never holding the worker. A connection that needs neither has no
transport at all (the plain path checks one attribute). The PROXY header comes first on the wire
(a TCP balancer writes it before the client's TLS handshake), so whatever follows it in the same
read goes on to TLS, or to HTTP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forkserve.http.proxyproto import ProxyHeaderReader, ProxyProtocolError
from forkserve.worker.tls import PLAIN_HTTP_REPLY, TlsError, TlsStream

if TYPE_CHECKING:
    import ssl


class TransportError(Exception):
    """The connection must end: ``reason`` for the log, ``reply`` (raw bytes) to send first."""

    def __init__(self, reason: str, reply: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class Transport:
    """One connection's PROXY header reader (until read) and TLS stream (for its life)."""

    __slots__ = ("environ", "proxy", "proxy_allowed", "tls")

    def __init__(self, proxy_mode: str, proxy_allowed: bool, context: ssl.SSLContext | None) -> None:
        # A peer not allowed to send a PROXY header is read in 'auto' mode: a header from it is
        # refused, plain bytes are its request.
        mode = proxy_mode if proxy_allowed else "auto"
        self.proxy = ProxyHeaderReader(mode) if proxy_mode != "off" else None
        self.proxy_allowed = proxy_allowed
        self.tls = TlsStream(context) if context is not None else None
        self.environ: dict[str, Any] | None = None  # what TLS adds to each request's environ

    def unwrap(self, conn: Any, data: bytes) -> bytes:
        """The HTTP bytes in what was just read (maybe none yet). Sets the client address from a
        PROXY header, sends what TLS wants sent; raises TransportError."""
        if self.proxy is not None:
            try:
                found = self.proxy.feed(data)
            except ProxyProtocolError as error:
                raise TransportError(str(error)) from None
            if found is None:
                return b""
            address, data = found
            if self.proxy.consumed and not self.proxy_allowed:
                raise TransportError("PROXY header from a peer not in proxy_allow_ips")
            self.proxy = None
            if address is not None:
                conn.remote_addr, conn.remote_port = address.address, address.port
            if not data:
                return b""
        tls = self.tls
        if tls is None:
            return data
        try:
            data = tls.receive(data)
        except TlsError as error:
            raise TransportError(f"TLS handshake failed: {error}",
                                 PLAIN_HTTP_REPLY if error.plain_http else b"") from None
        finally:
            output = tls.pending_output()
            if output:
                conn.sink.send_raw(output)
        if self.environ is None and tls.done:
            self.environ = tls.environ()
        return data

    def closing_bytes(self) -> bytes:
        """TLS's close_notify, to send before the connection closes (a clean end for the client)."""
        tls = self.tls
        if tls is None or not tls.done:
            return b""
        try:
            tls.ssl.unwrap()
        except OSError:  # ssl.SSLError
            pass  # (it waits for the client's close_notify, which we do not)
        return tls.pending_output()
