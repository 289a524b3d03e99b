"""How the benchmark and chaos clients reach a server: plain HTTP, TLS, a PROXY header, or uwsgi.

forkserve handles three transports besides plain HTTP in each worker's loop (README: "TLS, PROXY
protocol, uwsgi_pass"), each with its own way for a client to get half-way and stop, and for a
worker to get it wrong. A ``ClientTransport`` is what a client needs to speak one of them, so
that the same load, probe, stalled and slow clients run over each:

- ``http``: a TCP connection, HTTP/1.1 on it.
- ``tls``: the same inside TLS, verified against the certificate ``ensure_certificate`` made
  (a self-signed one is its own CA), or unverified when no CA file is given.
- ``proxy``: a PROXY protocol v1 header (HAProxy's ``send-proxy``, text: what most balancers
  send) naming a made-up client, written as soon as the connection is up, then HTTP/1.1.
- ``uwsgi``: nginx's ``uwsgi_pass``: one packet of CGI variables (the made-up client in
  ``REMOTE_ADDR``) and the body; the answer is HTTP/1.1 and the connection closes after it,
  so there is no keep-alive.

The server side of each is ``server_args``. The made-up clients come from documentation address
blocks (RFC 5737, RFC 3849), IPv4 and IPv6, so an echoed ``REMOTE_ADDR`` that is not the one sent
cannot be a coincidence.
"""

from __future__ import annotations

import random
import select
import socket
import ssl
import struct
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

HTTP, TLS, PROXY, UWSGI = "http", "tls", "proxy", "uwsgi"
TRANSPORTS = (HTTP, TLS, PROXY, UWSGI)
HOST = "127.0.0.1"
CONNECT_TIMEOUT = 5.0
# In a server's arguments: the certificate's paths, filled in when the server is started (the
# certificate is made in the run's temporary directory, which scenarios do not know in advance).
CERTFILE = "{certfile}"
KEYFILE = "{keyfile}"
TLS_SERVER_ARGS = ("--certfile", CERTFILE, "--keyfile", KEYFILE)  # forkserve's and gunicorn's names
# ECDSA P-256: what certbot issues by default; an RSA key would make every handshake cost mostly
# the server's RSA signature, the same for every server measured.
KEY_ARGS = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
DEFAULT_CLIENT = ("192.0.2.1", 40000)  # the made-up client of probes and stalled connections
HALF_HEAD = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: stalled-client\r\nAccept: */*\r\n\r\n"[:40]

Client = tuple[str, int]  # (address, port): who a PROXY header or a uwsgi packet says is asking


class CertificateError(RuntimeError):
    """openssl could not make the test certificate."""


@dataclass(frozen=True)
class Certificate:
    """A certificate and its key (the certificate is also the CA file a client verifies with)."""

    cert: Path
    key: Path


def ensure_certificate(directory: Path) -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1 in ``directory/tls``, made with the
    openssl command the first time it is asked for, so every server and client of one run shares
    it. Raises CertificateError when openssl fails."""
    folder = directory / "tls"
    found = Certificate(folder / "cert.pem", folder / "key.pem")
    if found.cert.exists() and found.key.exists():
        return found
    folder.mkdir(parents=True, exist_ok=True)
    command = ["openssl", "req", "-x509", *KEY_ARGS, "-nodes", "-keyout", str(found.key), "-out",
               str(found.cert), "-days", "2", "-subj", "/O=forkserve benchmarks/CN=localhost",
               "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or error
        raise CertificateError(f"cannot make a test certificate with openssl: {detail}") from None
    return found


def resolve_args(args: tuple[str, ...], certificate: Certificate | None) -> tuple[str, ...]:
    """``args`` with CERTFILE and KEYFILE replaced by the certificate's paths."""
    if certificate is None:
        return args
    paths = {CERTFILE: str(certificate.cert), KEYFILE: str(certificate.key)}
    return tuple(paths.get(arg, arg) for arg in args)


def server_args(transport: str) -> tuple[str, ...]:
    """forkserve's options for serving ``transport`` (TLS with the CERTFILE/KEYFILE placeholders)."""
    return {HTTP: (), TLS: TLS_SERVER_ARGS, PROXY: ("--proxy-protocol", "v1"),
            UWSGI: ("--protocol", "uwsgi")}[transport]


def made_up_client(rng: random.Random) -> Client:
    """A client address from the documentation blocks, IPv4 three times in four, and a port."""
    if rng.random() < 0.75:
        address = f"203.0.113.{rng.randint(1, 254)}"
    else:
        address = f"2001:db8::{rng.randint(1, 0xFFFF):x}"
    return address, rng.randint(1024, 65535)


def proxy_v1_header(client: Client, server_port: int) -> bytes:
    """HAProxy's ``send-proxy`` line for ``client`` connecting to ``server_port``."""
    address, port = client
    if ":" in address:
        return f"PROXY TCP6 {address} 2001:db8::1 {port} {server_port}\r\n".encode()
    return f"PROXY TCP4 {address} 192.0.2.254 {port} {server_port}\r\n".encode()


def uwsgi_packet(variables: dict[str, str]) -> bytes:
    """A uwsgi request packet (modifiers 0/0): the 4-byte header, then each key and value with its
    little-endian 16-bit length."""
    block = b"".join(
        struct.pack("<H", len(raw)) + raw
        for key, value in variables.items()
        for raw in (key.encode("latin-1"), value.encode("latin-1"))
    )
    return struct.pack("<BHB", 0, len(block), 0) + block


def tcp_connect(port: int, timeout: float = CONNECT_TIMEOUT, host: str = HOST,
                rcvbuf: int = 0, mss: int = 0) -> socket.socket:
    """A connected TCP socket, with a receive buffer and segment size set before the handshake
    when given (they only take full effect then).

    TCP_NODELAY, as curl, browsers and urllib3 set it: a request TLS writes as several records
    (a 64 KiB body is four) would otherwise wait after the first for the server's delayed ACK,
    40 ms on Linux, and every large TLS POST would show that, not the server.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if mss:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        sock.settimeout(timeout)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class HandshakeError(OSError):
    """The TCP connection was made but TLS could not be set up on it: no request was sent."""


@dataclass(frozen=True)
class ClientTransport:
    """What a client speaks to reach a server (see the module docstring).

    ``cafile``: for TLS, the certificate to verify the server against (None: no verification).
    """

    name: str = HTTP
    cafile: Path | None = None

    def __post_init__(self) -> None:
        if self.name not in TRANSPORTS:
            raise ValueError(f"unknown transport {self.name!r}; choose from {', '.join(TRANSPORTS)}")

    @property
    def keep_alive(self) -> bool:
        """Whether a connection may carry more than one request (uwsgi: one per connection)."""
        return self.name != UWSGI

    @property
    def scheme(self) -> str:
        return "https" if self.name == TLS else "http"

    @cached_property
    def context(self) -> ssl.SSLContext:
        """The client TLS context, made once per transport (and shared by its threads)."""
        if self.cafile is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cafile=str(self.cafile))
        return context

    def expected_remote_addr(self, client: Client, host: str = HOST) -> str:
        """The REMOTE_ADDR the app must see: the made-up client where the transport carries one."""
        return client[0] if self.name in (PROXY, UWSGI) else host

    def connect(self, port: int, timeout: float = CONNECT_TIMEOUT, host: str = HOST, rcvbuf: int = 0,
                mss: int = 0, client: Client = DEFAULT_CLIENT) -> socket.socket:
        """A connection ready for a request: TCP, then the PROXY header or the TLS handshake.

        OSError from the TCP connect as it comes (ConnectionRefusedError...); HandshakeError when
        the connection was made but TLS failed on it (the request was never sent).
        """
        sock = tcp_connect(port, timeout, host, rcvbuf, mss)
        try:
            if self.name == PROXY:
                sock.sendall(proxy_v1_header(client, port))
            elif self.name == TLS:
                try:
                    return self.context.wrap_socket(sock, server_hostname="localhost")
                except OSError as error:
                    raise HandshakeError(error.errno, f"TLS handshake: {error}") from error
        except BaseException:
            sock.close()
            raise
        return sock

    def request(self, method: str, path: str, query: str = "", body: bytes = b"", close: bool = False,
                client: Client = DEFAULT_CLIENT, headers: tuple[tuple[str, str], ...] = (),
                host_header: str = "bench") -> bytes:
        """One request as this transport writes it: HTTP/1.1, or a uwsgi packet and the body."""
        target = f"{path}?{query}" if query else path
        has_body = bool(body) or method in ("POST", "PUT")
        if self.name == UWSGI:
            variables = {
                "REQUEST_METHOD": method, "REQUEST_URI": target, "PATH_INFO": path, "QUERY_STRING": query,
                "CONTENT_TYPE": dict(headers).get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)) if has_body else "", "SERVER_PROTOCOL": "HTTP/1.1",
                "REQUEST_SCHEME": "http", "HTTPS": "", "REMOTE_ADDR": client[0], "REMOTE_PORT": str(client[1]),
                "SERVER_ADDR": HOST, "SERVER_PORT": "80", "SERVER_NAME": host_header, "HTTP_HOST": host_header,
            }
            for name, value in headers:
                if name.lower() not in ("content-type", "content-length"):
                    variables["HTTP_" + name.upper().replace("-", "_")] = value
            return uwsgi_packet(variables) + body
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}", *(f"{n}: {v}" for n, v in headers)]
        if has_body:
            lines.append(f"Content-Length: {len(body)}")
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def closed(self, sock: socket.socket) -> bool:
        """True when the server has closed (or reset) this idle connection; reads nothing the
        app sent. Over TLS a readable connection may hold only a close_notify, or a session
        ticket (TLS 1.3 sends them after the handshake): those are read to tell."""
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLRDHUP)
        events = poller.poll(0)
        if not events:
            return False
        if events[0][1] & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
            return True
        if isinstance(sock, ssl.SSLSocket):
            timeout = sock.gettimeout()
            sock.setblocking(False)
            try:
                sock.recv(1)  # b"": a close_notify; bytes nobody asked for: unusable as well
                return True
            except ssl.SSLWantReadError:
                return False
            except OSError:
                return True
            finally:
                sock.settimeout(timeout)
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def open_stalled(self, port: int, index: int, host: str = HOST,
                     timeout: float = CONNECT_TIMEOUT) -> socket.socket:
        """A connection that got half-way and stops, the way this transport can:

        - http: half a request head;
        - tls: even ``index``, half a ClientHello (the handshake never completes); odd, a
          completed handshake and half a request head inside it;
        - proxy: even, half the PROXY header; odd, the whole header and half a request head;
        - uwsgi: half a request packet.

        The socket is returned blocking; OSError when the connection could not be made.
        """
        first_kind = index % 2 == 0
        if self.name == TLS and first_kind:
            hello = _client_hello(self.context)
            sock = tcp_connect(port, timeout, host)
            _send_or_close(sock, hello[: len(hello) // 2])
            return sock
        if self.name == UWSGI:
            packet = self.request("GET", "/", client=DEFAULT_CLIENT, host_header="stalled-client")
            sock = tcp_connect(port, timeout, host)
            _send_or_close(sock, packet[: len(packet) // 2])
            return sock
        if self.name == PROXY and first_kind:
            header = proxy_v1_header(DEFAULT_CLIENT, port)
            sock = tcp_connect(port, timeout, host)
            _send_or_close(sock, header[: len(header) // 2])
            return sock
        sock = self.connect(port, timeout, host)
        _send_or_close(sock, HALF_HEAD)
        return sock


def _send_or_close(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except BaseException:
        sock.close()
        raise


def _client_hello(context: ssl.SSLContext) -> bytes:
    """The ClientHello a client with ``context`` would send first (its bytes, nothing sent)."""
    outgoing = ssl.MemoryBIO()
    engine = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    try:
        engine.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


PLAIN = ClientTransport()
