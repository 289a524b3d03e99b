"""The PROXY protocol (HAProxy's, versions 1 and 2), read from bytes as they arrive (sans-I/O).

Behind a TCP-mode load balancer (HAProxy ``send-proxy``, an AWS NLB) the client's address comes
in a header the balancer writes before anything else on the connection. Both versions are parsed
strictly, and a header is refused — never guessed at — when it is malformed:

- v1: ``PROXY TCP4|TCP6 SRC DST SRCPORT DSTPORT\\r\\n`` in at most 107 bytes, single spaces,
  addresses of the named family, ports 0-65535 without leading zeros; ``PROXY UNKNOWN ...\\r\\n``
  means "no address": the connection's own peer stands.
- v2: the 12-byte signature, version 2, command LOCAL (health checks: no address) or PROXY, family
  TCP over IPv4/IPv6 (UNIX and UNSPEC carry no usable address), a length that covers the address
  block; the TLVs after it are walked so that one running past the end is refused, and skipped.

``auto`` takes either version or none at all (a peer speaking HTTP straight away), deciding from
the first bytes; ``v1`` and ``v2`` require their header.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107
_V2_HEAD = struct.Struct("!12sBBH")
_V1_LINE = re.compile(rb"PROXY (TCP4|TCP6) (\S+) (\S+) (0|[1-9][0-9]{0,4}) (0|[1-9][0-9]{0,4})\r\n\Z")
_ADDRESS_BLOCK = {0x11: 12, 0x21: 36, 0x31: 216}  # family/protocol byte -> address block size
MODES = ("off", "v1", "v2", "auto")


class ProxyProtocolError(Exception):
    """A malformed (or missing, where required) PROXY header: the connection is closed."""


@dataclass(frozen=True)
class ProxiedAddress:
    """The client the balancer saw."""

    address: str
    port: str


def _checked_address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError(f"bad address {text[:46]!r} in the PROXY header") from None
    if address.version != version:
        raise ProxyProtocolError("address family does not match the PROXY header's")
    return str(address)


class ProxyHeaderReader:
    """Reads one connection's PROXY header. ``feed`` returns None while more bytes are needed,
    then ``(address or None, the bytes after the header)``; it raises ProxyProtocolError."""

    __slots__ = ("buffer", "consumed", "mode")

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.buffer = b""
        self.consumed = False  # was a PROXY header read (even one without an address)?

    def feed(self, data: bytes) -> tuple[ProxiedAddress | None, bytes] | None:
        buffer = self.buffer + data
        self.buffer = buffer
        if not buffer:
            return None
        if buffer[:1] == b"P" and self.mode in ("v1", "auto"):
            if not V1_PREFIX.startswith(buffer[:6]):
                return self._none(buffer)
            return self._v1(buffer)
        if buffer[:1] == b"\r" and self.mode in ("v2", "auto"):
            if not V2_SIGNATURE.startswith(buffer[:12]):
                return self._none(buffer)
            return self._v2(buffer)
        return self._none(buffer)

    def _none(self, buffer: bytes) -> tuple[None, bytes]:
        """No PROXY header: fine in ``auto`` (the peer speaks HTTP at once), an error otherwise."""
        if self.mode != "auto":
            raise ProxyProtocolError(f"expected a PROXY {self.mode} header, got {buffer[:16]!r}")
        return None, buffer

    def _v1(self, buffer: bytes) -> tuple[ProxiedAddress | None, bytes] | None:
        newline = buffer.find(b"\n", 0, V1_MAX)
        if newline < 0:
            if len(buffer) >= V1_MAX:
                raise ProxyProtocolError("PROXY v1 header longer than 107 bytes")
            return None
        if buffer[newline - 1:newline] != b"\r":
            raise ProxyProtocolError("PROXY v1 header not ended by CRLF")
        line, rest = buffer[: newline + 1], buffer[newline + 1:]
        self.consumed = True
        if line.startswith(b"PROXY UNKNOWN") and (len(line) == 15 or line[13:14] == b" "):
            return None, rest
        match = _V1_LINE.match(line)
        if match is None:
            raise ProxyProtocolError(f"malformed PROXY v1 header {line[:60]!r}")
        family, source, destination, source_port, destination_port = match.groups()
        version = 4 if family == b"TCP4" else 6
        address = _checked_address(source, version)
        _checked_address(destination, version)
        if int(source_port) > 65535 or int(destination_port) > 65535:
            raise ProxyProtocolError("port out of range in the PROXY v1 header")
        return ProxiedAddress(address, source_port.decode()), rest

    def _v2(self, buffer: bytes) -> tuple[ProxiedAddress | None, bytes] | None:
        if len(buffer) < _V2_HEAD.size:
            return None
        _, version_command, family, length = _V2_HEAD.unpack_from(buffer)
        if version_command >> 4 != 2:
            raise ProxyProtocolError(f"PROXY v2 header with version {version_command >> 4}")
        command = version_command & 0x0F
        if command not in (0, 1):
            raise ProxyProtocolError(f"PROXY v2 header with command {command}")
        total = _V2_HEAD.size + length
        if len(buffer) < total:
            return None
        block, rest = buffer[_V2_HEAD.size:total], buffer[total:]
        self.consumed = True
        needed = _ADDRESS_BLOCK.get(family, 0)
        if family not in (0x00, *_ADDRESS_BLOCK):
            raise ProxyProtocolError(f"PROXY v2 header with family/protocol 0x{family:02x}")
        if length < needed:
            raise ProxyProtocolError("PROXY v2 header shorter than its address block")
        _check_tlvs(block[needed:])
        if command == 0 or family not in (0x11, 0x21):  # LOCAL (a health check), UNIX, UNSPEC
            return None, rest
        if family == 0x11:
            address = str(ipaddress.IPv4Address(block[0:4]))
            port = struct.unpack_from("!H", block, 8)[0]
        else:
            address = str(ipaddress.IPv6Address(block[0:16]))
            port = struct.unpack_from("!H", block, 32)[0]
        return ProxiedAddress(address, str(port)), rest


def _check_tlvs(data: bytes) -> None:
    """Walk the TLVs (type, 2-byte length, value): each must fit in what is left."""
    offset = 0
    while offset < len(data):
        if len(data) - offset < 3:
            raise ProxyProtocolError("truncated TLV in the PROXY v2 header")
        length = struct.unpack_from("!H", data, offset + 1)[0]
        offset += 3 + length
        if offset > len(data):
            raise ProxyProtocolError("a TLV runs past the end of the PROXY v2 header")
