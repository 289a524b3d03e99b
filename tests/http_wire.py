"""A strict little HTTP/1.1 response reader for tests that speak raw bytes to the server.

``requests`` hides exactly what the request-path tests must see: interim 100 responses, how a
body is framed, whether a second response follows on the same connection, whether stray bytes
follow a body, and whether the server closed. This reader parses responses one by one off a
socket and fails loudly on anything malformed.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field


@dataclass
class WireResponse:
    """One response as it came off the wire."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    chunked: bool = False
    close_delimited: bool = False
    raw_head: bytes = field(default=b"", repr=False)

    def header(self, name: str) -> str | None:
        """The value of the first header called ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def header_count(self, name: str) -> int:
        return sum(1 for key, _ in self.headers if key.lower() == name.lower())


class WireReader:
    """Reads consecutive responses from one socket."""

    def __init__(self, sock: socket.socket, timeout: float = 10.0) -> None:
        self.sock = sock
        self.timeout = timeout
        self.buffer = b""
        self.eof = False

    def _fill(self, deadline: float) -> None:
        if self.eof:
            raise EOFError(f"connection closed; unparsed bytes: {self.buffer[:200]!r}")
        self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            raise TimeoutError(f"no complete response in time; have {self.buffer[:300]!r}") from None
        if not data:
            self.eof = True
            return
        self.buffer += data

    def _until(self, marker: bytes, deadline: float) -> bytes:
        while True:
            index = self.buffer.find(marker)
            if index >= 0:
                chunk, self.buffer = self.buffer[:index], self.buffer[index + len(marker):]
                return chunk
            self._fill(deadline)

    def _exactly(self, count: int, deadline: float) -> bytes:
        while len(self.buffer) < count:
            self._fill(deadline)
        chunk, self.buffer = self.buffer[:count], self.buffer[count:]
        return chunk

    def response(self, head_request: bool = False) -> WireResponse:
        """The next response, body included (framed by Content-Length, chunked, or close)."""
        deadline = time.monotonic() + self.timeout
        head = self._until(b"\r\n\r\n", deadline)
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        assert version == b"HTTP/1.1", f"bad status line {lines[0]!r}"
        code, _, reason = rest.partition(b" ")
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            assert colon and name and name == name.strip(), f"bad header line {line!r}"
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        response = WireResponse(int(code), reason.decode("latin-1"), headers, raw_head=head)
        status = response.status
        if status < 200 or status in (204, 304) or head_request:
            assert response.header("Transfer-Encoding") is None or head_request, response
            return response
        if (response.header("Transfer-Encoding") or "").lower() == "chunked":
            response.chunked = True
            response.body = self._chunked_body(deadline)
        elif response.header("Content-Length") is not None:
            assert response.header_count("Content-Length") == 1, response
            response.body = self._exactly(int(response.header("Content-Length") or 0), deadline)
        else:
            response.close_delimited = True
            while not self.eof:
                self._fill(deadline)
            response.body, self.buffer = self.buffer, b""
        return response

    def _chunked_body(self, deadline: float) -> bytes:
        body = b""
        while True:
            size_line = self._until(b"\r\n", deadline)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while self._until(b"\r\n", deadline):
                    pass  # trailer fields (the server sends none), up to the empty line
                return body
            body += self._exactly(size, deadline)
            assert self._exactly(2, deadline) == b"\r\n", "chunk not followed by CRLF"

    def closes(self, timeout: float = 10.0) -> bool:
        """True if the server closes the connection with nothing more to say within ``timeout``;
        False if it stays open that long. Stray bytes fail the calling test."""
        deadline = time.monotonic() + timeout
        try:
            while not self.eof:
                self._fill(deadline)
        except TimeoutError:
            return False
        assert self.buffer == b"", f"stray bytes before close: {self.buffer[:200]!r}"
        return True


def send_pieces(sock: socket.socket, pieces: list[bytes], pause: float = 0.0) -> None:
    """Send each piece with its own send call (the server may refuse and close half-way; that is
    fine, the test reads its answer)."""
    try:
        for piece in pieces:
            sock.sendall(piece)
            if pause:
                time.sleep(pause)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
        pass  # (over TLS, the server's close shows as an EOF to the next write)


def exchange(address: tuple[str, int] | str, data: bytes, count: int = 1, head_request: bool = False,
             timeout: float = 10.0) -> tuple[list[WireResponse], WireReader]:
    """Connect, send ``data``, read ``count`` responses; returns them and the reader (still open:
    close ``reader.sock`` when done)."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
    else:
        sock = socket.create_connection(address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    send_pieces(sock, [data])
    reader = WireReader(sock, timeout)
    return [reader.response(head_request) for _ in range(count)], reader
