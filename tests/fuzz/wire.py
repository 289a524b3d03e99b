"""Sending a case on a real socket and reading back what the server answers, every wait bounded.

How a case ends decides how long it can take. When every request in it is complete and the
connection should persist, a probe request follows it on the same connection: its answer shows
the connection is still in step (no stray bytes, nothing swallowed) and it is reused for the next
case. When the last request asks to close, the client waits for the server's close. Otherwise (a
refusal or a stream that ends mid-request) the client half-closes, so the server sees the end at
once instead of waiting for its timeout, unless the case ``hold``s: then the server's own header
or body timeout must end it.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field

from http_wire import WireReader, WireResponse, send_pieces

from .strategies import Case

PROBE = b"GET /__probe HTTP/1.1\r\nHost: probe\r\n\r\n"
MAX_RESPONSES = 12  # a case has at most three requests: anything near this is a runaway server


@dataclass
class Exchange:
    """What came back for one case.

    ``closed``: the server closed the connection (cleanly: nothing half-sent); ``probe``: the
    probe after the case got its answer on the same connection; ``timed_out`` / ``malformed``:
    what went wrong reading, empty when nothing did.
    """

    responses: list[WireResponse] = field(default_factory=list)
    closed: bool = False
    probe: bool = False
    timed_out: str = ""
    malformed: str = ""


def connect(address: tuple[str, int], timeout: float) -> socket.socket:
    """A client socket with every operation bounded by ``timeout`` and Nagle off (so each piece
    of a split or trickled case leaves in its own segment)."""
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def is_probe_answer(response: WireResponse) -> bool:
    return response.status == 200 and response.body == b"probe"


def play(sock: socket.socket, case: Case, then: str, wait: float) -> Exchange:
    """Send ``case`` and read every response, each within ``wait`` seconds.

    ``then`` says how the client ends the case: ``probe`` (send the probe and read up to its
    answer), ``wait`` (read until the server closes) or ``half-close`` (shut our side, then read
    until the server closes).
    """
    exchange = Exchange()
    sock.settimeout(wait)
    try:
        send_pieces(sock, case.chunking.pieces(case.data))
        if then == "probe":
            send_pieces(sock, [PROBE])
        elif then == "half-close":
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
    except TimeoutError:
        exchange.timed_out = "the server stopped reading what the client sent"
        return exchange
    reader = WireReader(sock, timeout=wait)
    while len(exchange.responses) < MAX_RESPONSES:
        try:
            response = reader.response()
        except EOFError:
            if reader.buffer:
                exchange.malformed = f"connection closed inside a response: {reader.buffer[:200]!r}"
            exchange.closed = True
            return exchange
        except TimeoutError as error:
            exchange.timed_out = str(error)
            return exchange
        except (AssertionError, ValueError) as error:
            exchange.malformed = f"malformed response: {error}"
            return exchange
        if then == "probe" and is_probe_answer(response):
            exchange.probe = True
            return exchange
        exchange.responses.append(response)
    exchange.malformed = f"more than {MAX_RESPONSES} responses"
    return exchange


def fresh_probe(address: tuple[str, int], timeout: float) -> str:
    """Send the probe on a new connection: '' when it gets its 200, else what happened."""
    try:
        with connect(address, timeout) as sock:
            send_pieces(sock, [PROBE])
            response = WireReader(sock, timeout).response()
    except (OSError, EOFError, AssertionError, ValueError) as error:
        return f"probe on a fresh connection failed: {error!r}"
    return "" if is_probe_answer(response) else f"probe on a fresh connection got {response}"
