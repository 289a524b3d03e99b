"""The differential oracle between forkserve's two parsers, in process: the default path (the fast
path, then h11) and llhttp's (``http_parser = 'httptools'``) must read every case alike.

Each case's bytes go, in the pieces the case is sent in, through a connection's head reader with
each parser and the fuzz server's limits; between heads, the body the head announces is skipped
with forkserve's own body decoder, so pipelined requests are read too. What each parser gives is
the list of heads it read (every RequestHead field: method, target, version, fields, framing,
keep-alive, Host, the bytes after it — and so the same environ) ending, when it does, in a
refusal (status and reason). The two lists must be equal: class ``parsers-differ``.

No server is needed, so this costs microseconds per case, and it sees every head of every case,
where the server-side oracles see what reached the app.
"""

from __future__ import annotations

import dataclasses
from functools import cache

from forkserve.http.body import BodyDecoder
from forkserve.http.errors import HttpError
from forkserve.http.head import HeadLimits, HeadReader, RequestHead
from forkserve.settings.resolve import resolve

from .server import SERVER_ARGS

Reading = list[RequestHead | tuple[int, str]]


@cache
def server_limits() -> tuple[HeadLimits, int]:
    """The fuzz server's head limits (its parser: h11) and body limit, from its own arguments."""
    config = resolve(["-c", "/dev/null", *SERVER_ARGS], {})
    return HeadLimits.from_config(config), config.limit_request_body


def read(pieces: list[bytes], limits: HeadLimits, body_limit: int) -> Reading:
    """The heads a connection reads from ``pieces`` with these limits, then its refusal, if any.
    Reading stops at a refusal and after a head that closes the connection."""
    reader = HeadReader(limits)
    decoder: BodyDecoder | None = None
    reading: Reading = []
    for data in pieces:
        while data:
            try:
                if decoder is not None:
                    decoder.feed(data)
                    if not decoder.done:
                        break
                    data, decoder = decoder.leftover, None
                    continue
                head = reader.feed(data)
            except HttpError as error:
                reading.append((error.status, error.reason))
                return reading
            if head is None:
                break
            reading.append(head)
            if not head.keep_alive:
                return reading
            if head.content_length or head.chunked:
                decoder = BodyDecoder(head.content_length, head.chunked, body_limit)
            data = head.leftover
    return reading


def both_parsers() -> tuple[HeadLimits, HeadLimits]:
    """The fuzz server's limits with the default parser, and with llhttp's."""
    limits = server_limits()[0]
    return dataclasses.replace(limits, parser="h11"), dataclasses.replace(limits, parser="httptools")


def compare(pieces: list[bytes], parsers: tuple[HeadLimits, HeadLimits] | None = None) -> str | None:
    """None when both parsers (by default: h11, httptools) read ``pieces`` alike; else where and
    how they differ."""
    parsers = parsers or both_parsers()
    body_limit = server_limits()[1]
    first, second = (read(pieces, limits, body_limit) for limits in parsers)
    if first == second:
        return None
    index = next((i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b),
                 min(len(first), len(second)))
    shown = [reading[index] if index < len(reading) else "nothing more" for reading in (first, second)]
    return f"head {index + 1}: {parsers[0].parser} read {shown[0]!r}; {parsers[1].parser} read {shown[1]!r}"
