"""How deep is the listen queue? Connections the kernel accepted that no worker has taken yet.

This is the number that says "add workers" before clients see timeouts. Linux answers for the
listening socket itself, without touching the queue:

- TCP: ``getsockopt(TCP_INFO)``. For a socket in LISTEN state the kernel reports the current
  accept-queue length in ``tcpi_unacked`` and the backlog limit in ``tcpi_sacked``.
- Unix sockets: the sock_diag netlink interface (what ``ss -x`` uses), asked for this one socket
  by inode with ``UDIAG_SHOW_RQLEN``: for a listener, ``rqueue`` is the queue length and
  ``wqueue`` the limit. Where netlink is not permitted the depth is simply unknown (None).

Both are a few microseconds, done by the master only when someone asks for stats.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

_TCP_INFO_SIZE = 104
_TCP_INFO_QUEUE = struct.Struct("<II")  # tcpi_unacked, tcpi_sacked
_TCP_INFO_QUEUE_OFFSET = 24

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x01
NLMSG_ERROR = 2
NLMSG_DONE = 3
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_RQLEN = 4
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_UNIX_DIAG_REQ = struct.Struct("=BBHIII2I")  # family, protocol, pad, states, ino, show, cookie[2]
_UNIX_DIAG_MSG = struct.Struct("=BBBBI2I")  # family, type, state, pad, ino, cookie[2]
_RTATTR = struct.Struct("=HH")
_RQLEN = struct.Struct("=II")
_NO_COOKIE = 0xFFFFFFFF
_TCP_LISTEN = 10  # also the unix socket LISTEN state in sock_diag
_NETLINK_TIMEOUT = 0.2


@dataclass(frozen=True)
class QueueDepth:
    """Connections waiting in a listen queue, and how many the queue can hold."""

    waiting: int
    limit: int


def queue_depth(sock: socket.socket) -> QueueDepth | None:
    """The listen queue of a listening socket, or None when the kernel will not say."""
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return _tcp_queue(sock)
        if sock.family == socket.AF_UNIX:
            return _unix_queue(sock)
    except OSError:
        return None
    return None


def _tcp_queue(sock: socket.socket) -> QueueDepth | None:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    if len(info) < _TCP_INFO_QUEUE_OFFSET + _TCP_INFO_QUEUE.size or info[0] != _TCP_LISTEN:
        return None
    waiting, limit = _TCP_INFO_QUEUE.unpack_from(info, _TCP_INFO_QUEUE_OFFSET)
    return QueueDepth(waiting, limit)


def _unix_queue(sock: socket.socket) -> QueueDepth | None:
    inode = os.fstat(sock.fileno()).st_ino
    request = _UNIX_DIAG_REQ.pack(
        socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, inode & 0xFFFFFFFF, UDIAG_SHOW_RQLEN, _NO_COOKIE, _NO_COOKIE
    )
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as diag:
        diag.settimeout(_NETLINK_TIMEOUT)
        diag.sendto(header + request, (0, 0))
        reply = diag.recv(8192)
    return parse_unix_diag_reply(reply, inode)


def parse_unix_diag_reply(reply: bytes, inode: int) -> QueueDepth | None:
    """The queue numbers in a sock_diag reply about one unix socket (None when absent)."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(reply):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(reply, offset)
        if length < _NLMSGHDR.size or kind in (NLMSG_ERROR, NLMSG_DONE):
            return None
        body = offset + _NLMSGHDR.size
        if kind == SOCK_DIAG_BY_FAMILY and _UNIX_DIAG_MSG.unpack_from(reply, body)[4] == inode & 0xFFFFFFFF:
            return _rqlen_attribute(reply, body + _UNIX_DIAG_MSG.size, offset + length)
        offset += (length + 3) & ~3
    return None


def _rqlen_attribute(reply: bytes, start: int, end: int) -> QueueDepth | None:
    while start + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(reply, start)
        if length < _RTATTR.size:
            return None
        if kind == UNIX_DIAG_RQLEN and length >= _RTATTR.size + _RQLEN.size:
            waiting, limit = _RQLEN.unpack_from(reply, start + _RTATTR.size)
            return QueueDepth(waiting, limit)
        start += (length + 3) & ~3
    return None
