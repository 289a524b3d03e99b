"""Socket option values the HTTP layer sets on connections (and the process side on listeners)."""

from __future__ import annotations

import struct


def timeval(seconds: float) -> bytes:
    """A struct timeval for SO_RCVTIMEO / SO_SNDTIMEO (0 would mean 'forever', so round up)."""
    whole = int(seconds)
    micro = max(int((seconds - whole) * 1_000_000), 0 if whole else 1000)
    return struct.pack("ll", whole, micro)
