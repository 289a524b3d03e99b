"""TLS in the worker's loop: the server context, and one connection's TLS over memory buffers.

The handshake must never hold a worker: a client that connects and sends nothing, or handshakes
at a crawl, is one more connection in the loop. So TLS runs sans-I/O, on ``ssl.MemoryBIO``\\s:
the loop reads raw bytes from the socket (the same ``recvmsg`` as plain connections, with the
kernel's arrival stamp), feeds them in, and gets application bytes back; what TLS wants to send
(handshake records, then encrypted responses) is taken out and sent by the connection's outbound
buffer like any other bytes. A PROXY header in front of the handshake is simply read first.

The context follows gunicorn's settings (``certfile``, ``keyfile``, ``ca_certs``, ``cert_reqs``,
``ciphers``) on top of the ``ssl`` module's secure server defaults, TLS 1.2 at least and ALPN
``http/1.1``; the ``ssl_context(config, default_context)`` hook may return another context.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from forkserve.settings.registry import Config

READ_SIZE = 65536
CERT_REQS = {"none": "CERT_NONE", "optional": "CERT_OPTIONAL", "required": "CERT_REQUIRED"}  # ssl's names


class _ImportedOnFirstUse:
    """The ``ssl`` module, imported when first used: a server without TLS never loads it (with
    libssl, some 1.8 MiB of every worker's RSS). The first attribute read imports it and puts
    the real module in this module's globals, so later reads cost nothing extra."""

    def __getattr__(self, name: str) -> Any:
        module = importlib.import_module("ssl")
        globals()["ssl"] = module
        return getattr(module, name)


if TYPE_CHECKING:
    import ssl
else:
    ssl = _ImportedOnFirstUse()
_PLAIN_HTTP_BODY = b"400 The plain HTTP request was sent to HTTPS port\n"
PLAIN_HTTP_REPLY = (  # what nginx answers too
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
    b"Connection: close\r\n\r\n%b" % (len(_PLAIN_HTTP_BODY), _PLAIN_HTTP_BODY)
)


class TlsError(Exception):
    """The handshake (or a record) failed: ``plain_http`` when the client spoke HTTP instead."""

    def __init__(self, reason: str, plain_http: bool = False) -> None:
        super().__init__(reason)
        self.plain_http = plain_http


def server_context(config: Config) -> ssl.SSLContext:
    """The workers' TLS context. Raises OSError/ssl.SSLError/ValueError naming what is wrong."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.certfile, config.keyfile or None)
    context.verify_mode = getattr(ssl, CERT_REQS[config.cert_reqs])
    if config.ca_certs:
        context.load_verify_locations(config.ca_certs)
    if config.ciphers:
        context.set_ciphers(config.ciphers)
    context.set_alpn_protocols(["http/1.1"])
    return context


def worker_context(config: Config) -> ssl.SSLContext:
    """The context a worker serves with: forkserve's, or what the ``ssl_context`` hook returns
    (gunicorn's signature: it gets the config and a factory of the default context)."""
    hook = config.hook("ssl_context")
    if hook is None:
        return server_context(config)
    context = hook(config, lambda: server_context(config))
    if not isinstance(context, ssl.SSLContext):
        raise TypeError(f"the ssl_context hook returned {type(context).__name__}, not an ssl.SSLContext")
    return context


class TlsStream:
    """One connection's TLS: raw bytes in, application bytes out, and the other way round."""

    __slots__ = ("done", "incoming", "outgoing", "ssl")

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.done = False  # handshake complete?

    def receive(self, raw: bytes) -> bytes:
        """Feed bytes read from the socket; the application bytes they complete (maybe none)."""
        if raw:
            self.incoming.write(raw)
        else:
            self.incoming.write_eof()
        try:
            if not self.done:
                self.ssl.do_handshake()
                self.done = True
            chunks = []
            while chunk := self.ssl.read(READ_SIZE):  # b"": the TLS stream ended
                chunks.append(chunk)
            return b"".join(chunks)
        except ssl.SSLWantReadError:
            return b"".join(chunks) if self.done else b""
        except ssl.SSLZeroReturnError:  # the client's close_notify
            return b"".join(chunks) if self.done else b""
        except ssl.SSLError as error:
            reason = getattr(error, "reason", None) or str(error)
            raise TlsError(str(reason), plain_http=reason == "HTTP_REQUEST") from None

    def pending_output(self) -> bytes:
        """What TLS wants sent now (handshake records, alerts, encrypted data)."""
        return self.outgoing.read()

    def encrypt(self, data: bytes) -> bytes:
        """Application bytes as TLS records, ready for the socket."""
        self.ssl.write(data)
        return self.outgoing.read()

    def environ(self) -> dict[str, Any]:
        """What the app learns of the TLS session (see README: TLS)."""
        cipher = self.ssl.cipher()
        found: dict[str, Any] = {
            "HTTPS": "on",
            "SSL_PROTOCOL": self.ssl.version() or "",
            "SSL_CIPHER": cipher[0] if cipher else "",
        }
        certificate = self.ssl.getpeercert()
        if certificate:
            found["SSL_CLIENT_VERIFY"] = "SUCCESS"
            found["SSL_CLIENT_S_DN"] = _distinguished_name(certificate.get("subject", ()))
            found["SSL_CLIENT_I_DN"] = _distinguished_name(certificate.get("issuer", ()))
            found["SSL_CLIENT_M_SERIAL"] = certificate.get("serialNumber", "")
        else:
            found["SSL_CLIENT_VERIFY"] = "NONE"
        return found


def _distinguished_name(name: Any) -> str:
    """RFC 4514-style text of a certificate name, most specific part first (``CN=a,O=b``)."""
    parts = [f"{_SHORT.get(key, key)}={value}" for rdn in name for key, value in rdn]
    return ",".join(reversed(parts))


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
          "stateOrProvinceName": "ST", "localityName": "L", "emailAddress": "emailAddress"}


class TlsSocket:
    """A connection's socket as the streaming request body sees it (``--no-request-buffering``):
    ``recv`` gives application bytes (BlockingIOError until a whole record is in), ``sendall``
    encrypts (the 100 Continue)."""

    def __init__(self, sock: Any, tls: TlsStream) -> None:
        self.sock = sock
        self.tls = tls
        self.buffer = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, size: int) -> bytes:
        while not self.buffer:
            raw = self.sock.recv(READ_SIZE)  # BlockingIOError: nothing yet; b"": the client left
            try:
                self.buffer = self.tls.receive(raw)
            except TlsError as error:
                raise ConnectionResetError(f"TLS: {error}") from None
            if not raw:
                return self.buffer
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(self.tls.encrypt(data))


def check_tls(config: Config) -> str | None:
    """Why the TLS settings cannot serve (one line naming the setting), or None when they can:
    the master asks before it starts, and before a HUP replaces workers that serve fine."""
    if not config.certfile:
        return None
    try:
        worker_context(config)
    except (OSError, ssl.SSLError, ValueError, TypeError) as error:
        return f"setting 'certfile' ({config.certfile}): cannot serve TLS with it: {error}"
    return None
