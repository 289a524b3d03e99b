"""The PROXY protocol parser, v1 and v2: what it takes, what it refuses, and that no truncation or
split changes the outcome."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from forkserve.http.proxyproto import V2_SIGNATURE, ProxiedAddress, ProxyHeaderReader, ProxyProtocolError

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def v2(command: int = 1, family: int = 0x11, source: str = "203.0.113.7", destination: str = "192.0.2.1",
       ports: tuple[int, int] = (5555, 80), tlvs: bytes = b"", length: int | None = None) -> bytes:
    if family == 0x11:
        block = ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address(destination).packed
        block += struct.pack("!HH", *ports)
    elif family == 0x21:
        block = ipaddress.IPv6Address(source).packed + ipaddress.IPv6Address(destination).packed
        block += struct.pack("!HH", *ports)
    elif family == 0x31:
        block = b"\0" * 216
    else:
        block = b""
    body = block + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body) if length is None else length) + body


VALID = [
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 80\r\n", ProxiedAddress("203.0.113.7", "5555")),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 443\r\n", ProxiedAddress("2001:db8::7", "65535")),
    (b"PROXY UNKNOWN\r\n", None),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
    (v2(), ProxiedAddress("203.0.113.7", "5555")),
    (v2(family=0x21, source="2001:db8::7", destination="2001:db8::1"), ProxiedAddress("2001:db8::7", "5555")),
    (v2(tlvs=b"\x01\x00\x02h2" + b"\x04\x00\x00"), ProxiedAddress("203.0.113.7", "5555")),  # ALPN, NOOP
    (v2(command=0), None),  # LOCAL: a health check
    (v2(family=0x00), None),  # UNSPEC
    (v2(family=0x31), None),  # UNIX
]


@pytest.mark.parametrize(("header", "address"), VALID)
def test_valid_headers_in_any_split(header: bytes, address: ProxiedAddress | None) -> None:
    mode = "v1" if header.startswith(b"PROXY") else "v2"
    for size in (len(header) + len(REQUEST), 1, 3, 7):
        reader = ProxyHeaderReader(mode)
        wire, result = header + REQUEST, None
        for start in range(0, len(wire), size):
            result = reader.feed(wire[start:start + size])
            if result is not None:
                rest = result[1] + wire[start + size:]
                break
        assert result is not None and result[0] == address and rest == REQUEST and reader.consumed


@pytest.mark.parametrize(("header", "address"), VALID)
def test_every_truncation_waits_for_more(header: bytes, address: ProxiedAddress | None) -> None:
    mode = "v1" if header.startswith(b"PROXY") else "v2"
    for end in range(len(header)):
        assert ProxyHeaderReader(mode).feed(header[:end]) is None, header[:end]


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 080\r\n",  # leading zero
    b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 80\r\n",  # port out of range
    b"PROXY TCP4  203.0.113.7 192.0.2.1 5555 80\r\n",  # two spaces
    b"PROXY TCP4 2001:db8::7 192.0.2.1 5555 80\r\n",  # family mismatch
    b"PROXY TCP4 203.0.113.999 192.0.2.1 5555 80\r\n",  # not an address
    b"PROXY UDP4 203.0.113.7 192.0.2.1 5555 80\r\n",  # unknown protocol
    b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 80\n",  # bare LF
    b"PROXY TCP4 " + b"1" * 100 + b"\r\n",  # too long
    b"PROXY TCP4 203.0.113.7 192.0.2.1 5555\r\n",  # a field missing
    v2()[:12] + b"\x11" + v2()[13:],  # version 1
    v2(command=2),  # unknown command
    v2(family=0x12),  # UDP over IPv4
    v2(length=4),  # shorter than its address block
    v2(tlvs=b"\x01\x00\x09h2"),  # a TLV running past the end
    v2(tlvs=b"\x01\x00"),  # a truncated TLV
])
def test_malformed_headers_are_refused(header: bytes) -> None:
    mode = "v1" if header.startswith(b"PROXY") else "v2"
    with pytest.raises(ProxyProtocolError):
        ProxyHeaderReader(mode).feed(header + REQUEST)


@pytest.mark.parametrize("mode", ["v1", "v2"])
def test_a_required_header_that_is_missing_is_refused(mode: str) -> None:
    with pytest.raises(ProxyProtocolError):
        ProxyHeaderReader(mode).feed(REQUEST)


def test_the_other_version_is_refused_when_one_is_required() -> None:
    with pytest.raises(ProxyProtocolError):
        ProxyHeaderReader("v1").feed(v2() + REQUEST)
    with pytest.raises(ProxyProtocolError):
        ProxyHeaderReader("v2").feed(b"PROXY UNKNOWN\r\n" + REQUEST)


@pytest.mark.parametrize("start", [REQUEST, b"POST / HTTP/1.1\r\n", b"\r\nGET / HTTP/1.1\r\n"])
def test_auto_passes_a_plain_request_through(start: bytes) -> None:
    reader = ProxyHeaderReader("auto")
    result = reader.feed(start)
    if result is None:  # "\r\n" could still start a v2 signature
        result = reader.feed(b"")
    assert result == (None, start) and not reader.consumed
