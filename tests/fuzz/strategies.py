"""Hypothesis strategies for request byte streams: valid seeds, then structural mutations.

A request starts as a valid seed (GET, HEAD, POST with a Content-Length or a chunked body,
OPTIONS ``*``, an absolute-form target, HTTP/1.0 with and without keep-alive, Expect), so the
differential oracle has accepted requests to compare, and then gets zero to three mutations
where request smuggling and parser bugs live: the request line (methods including CONNECT and
lower case, the four target forms, versions, separators), header fields (control bytes, NUL,
bare CR/LF, high bytes, obs-fold, whitespace before the colon, long lines, many fields, case,
duplicates), Content-Length (signs, leading zeros, lists, duplicates, overflow, a wrong count),
Transfer-Encoding (case, whitespace, lists, duplicates, with Content-Length, other codings),
chunk sizes, extensions, line ends, trailers, and the Connection field. A case is one to three
such requests, pipelined, sometimes after empty lines and sometimes truncated, and is sent whole,
split at random points, or trickled a few bytes per send.

Probabilities are set with ``sampled_from`` over weighted tuples (hypothesis draws those
uniformly, unlike small integer ranges, which it biases toward their ends), and the plain choice
comes first, so hypothesis shrinks a failure toward the simplest request that still fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from hypothesis import strategies as st

CRLF = b"\r\n"
SPECIAL_BYTES = (b"\x00", b"\r", b"\n", b"\t", b"\x01", b"\x0b", b"\x0c", b"\x1f", b"\x7f", b"\x80", b"\xff",
                 b" ", b":", b",", b";", b'"', b"_", b"#")
METHODS = (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT",
           b"get", b"post", b"connect", b"Connect", b"M-SEARCH", b"PROPFIND", b"G@T", b"GE\x00T", b"")
VERSIONS = (b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/2", b"http/1.1",
            b"HTTP/1.10", b"HTTP/1.1x", b"HTTP/1", b"HTTP/ 1.1", b"HTTP/1.1\t", b"")
LINE_SEPARATORS = (b"  ", b"\t", b" \t", b"", b"\x0b")
HOSTS = (b"example.com:8080", b"[::1]:80", b"", b"a b", b"a/b", b"u@example.com", b"example.com:x",
         b"EXAMPLE.com.", b"xn--bcher-kva.example", b"a,b", b"a\x80")
CONNECTION_VALUES = (b"close", b"keep-alive", b"Keep-Alive", b"keep-alive, close", b"close, keep-alive",
                     b"CLOSE", b" close ", b"upgrade", b"te", b"", b",", b"closed", b"clos e",
                     b"keep-alive,,close", b"close;x")
CL_FORMS = ("0{n}", "+{n}", "-{n}", "{n}, {n}", "{n},{n}", " {n} ", "{n}\t", "0x{n:x}", "{n}.0", "",
            "{n} {n}", "99999999999999999999999", "18446744073709551617", "{n}, {m}", "{m}", "{k}", "4097")
TE_VALUES = (b"Chunked", b"CHUNKED", b" chunked ", b"chunked\t", b"chunked, identity",
             b"identity, chunked", b"gzip, chunked", b"chunked,", b",chunked", b"chunked;q=1",
             b'"chunked"', b"x-chunked", b"chunked\x0b", b"identity", b"chunked, chunked", b"", b"chunk")
VALID_FIELDS = (b"Accept: */*", b"User-Agent: fuzz/1", b"Content-Type: text/plain", b"Cookie: a=1",
                b"Cookie: b=2", b"X-Fuzz: one", b"X-Fuzz: two", b"X_Under: score", b"X-Under: dash",
                b"X-Empty:", b"X-Spaces:   padded   ", b"X-Obs: caf\xe9", b"X-Request-ID: fuzz-1",
                b"Accept-Encoding: gzip", b"X-Pct: %41")
ODD_FIELDS = (b"Expect: 100-continue", b"Expect: 100-Continue, x", b"Upgrade: websocket", b"TE: trailers",
              b"Trailer: X-T", b"Forwarded: for=1.2.3.4", b"X-Forwarded-For: 1.2.3.4",
              b"Content-Encoding: gzip", b"Range: bytes=0-1", b"Content-Type: a\x00b", b"Host: second",
              b"X-Colon: a:b", b": no-name", b"no-colon", b"X-\xffName: v", b"X-Tab:\tv\t")
CHUNK_SIZE_FORMS = ("{n:X}", "0{n:x}", "0x{n:x}", "+{n:x}", "-{n:x}", " {n:x}", "{n:x} ", "{n:017x}",
                    "{n:x}_", "", "{m:x}", "{k:x}", "{n:016x}")
CHUNK_EXTENSIONS = (b";a", b";a=b", b';a="q d"', b"; a = b", b";", b";a=", b';a="open', b";a\x01", b";a=b;c",
                    b"; a\r", b";\xff", b'; a="\\"x"', b";a=b c")
DATA_ENDS = (b"\n", b"", b"x\r\n", b"\r", b"\r\r\n")
LAST_CHUNKS = (b"00", b"0;a=b", b"000000000000000000", b"0 ", b"0\t", b"")
TRAILERS = (b"X-T: v", b"X-T:", b"Content-Length: 5", b"Host: evil", b"Transfer-Encoding: chunked",
            b"bad", b" folded", b"X-T : v", b"X-T: a\x00b", b"Connection: close")
FINAL_LINE_ENDS = (b"\n", b"", b"\r", b"\r\n\r\n")
LEADING = (b"",) * 24 + (CRLF, CRLF * 8, CRLF * 9, b"\n", b"\r", b" \r\n")
# "noread", "part" and "line" make the fuzz app leave (some of) the body unread for the server to drain
SEGMENTS = (b"a", b"b0", b"", b"z.z", b"..", b"~-_", b"%41", b"%2f", b"a%", b"%zz", b"%00", b"%e9", b"a=b&c",
            b"noread", b"part", b"line")
LONG_SIZES = (1000, 1010, 1011, 1016, 1017, 5000)  # a 1024-byte limit: line = size + 14, field = size + 8


@dataclass
class Chunk:
    """One chunk of a chunked body: its size line (size, extension) and data with its line end.
    The last chunk of a body uses only its size line."""

    data: bytes
    size: bytes = b""
    extension: bytes = b""
    end: bytes = CRLF

    def __post_init__(self) -> None:
        self.size = self.size or b"%x" % len(self.data)

    def render(self) -> bytes:
        return self.size + self.extension + CRLF + self.data + self.end


@dataclass
class Draft:
    """A request under construction: parts a mutation can change, rendered to bytes at the end."""

    method: bytes = b"GET"
    target: bytes = b"/"
    version: bytes = b"HTTP/1.1"
    separators: tuple[bytes, bytes] = (b" ", b" ")
    fields: list[bytes] = field(default_factory=list)
    body: bytes = b""
    chunks: list[Chunk] | None = None  # a chunked body when not None; the last is the last-chunk
    trailers: list[bytes] = field(default_factory=list)
    final: bytes = CRLF
    line: bytes | None = None  # the request line, once a byte-level mutation has touched it

    def request_line(self) -> bytes:
        if self.line is None:
            return self.method + self.separators[0] + self.target + self.separators[1] + self.version
        return self.line

    def render(self) -> bytes:
        head = self.request_line() + CRLF + b"".join(f + CRLF for f in self.fields) + CRLF
        if self.chunks is None:
            return head + self.body
        *chunks, last = self.chunks
        body = b"".join(chunk.render() for chunk in chunks) + last.size + last.extension + CRLF
        return head + body + b"".join(t + CRLF for t in self.trailers) + self.final

    def field_index(self, name: bytes) -> int | None:
        for index, line in enumerate(self.fields):
            if line.split(b":", 1)[0].strip().lower() == name:
                return index
        return None

    def set_field(self, name: bytes, line: bytes) -> None:
        index = self.field_index(name)
        if index is None:
            self.fields.append(line)
        else:
            self.fields[index] = line


_BOOL = st.booleans()
_samplers: dict[tuple, st.SearchStrategy] = {}
_ranges: dict[int, st.SearchStrategy[int]] = {}


def pick(draw: st.DrawFn, options: tuple) -> Any:
    """One of ``options``, uniformly. Strategies are built once per tuple: building one per draw
    costs hypothesis more than the draw itself."""
    try:
        strategy = _samplers[options]
    except KeyError:
        strategy = _samplers[options] = st.sampled_from(options)
    return draw(strategy)


def upto(draw: st.DrawFn, n: int) -> int:
    """An integer in 0..n (cached like ``pick``)."""
    try:
        strategy = _ranges[n]
    except KeyError:
        strategy = _ranges[n] = st.integers(0, n)
    return draw(strategy)


_BODY = st.binary(max_size=16)
_CHUNK_DATA = st.lists(st.binary(min_size=1, max_size=10), max_size=2)
_EXTRA_FIELDS = st.lists(st.sampled_from(VALID_FIELDS), max_size=2)
_CUTS = st.lists(st.floats(0, 1, allow_subnormal=False), min_size=1, max_size=3)


@st.composite
def origin_targets(draw: st.DrawFn) -> bytes:
    """``/path?query`` with percent escapes (valid and not) and sometimes a fragment."""
    path = b"/" + b"/".join(pick(draw, SEGMENTS) for _ in range(pick(draw, (0, 1, 1, 2, 3))))
    path += pick(draw, (b"", b"", b"%41", b"%2F", b"%e9", b"%zz", b"%", b"%25", b"/../x", b"//"))
    if draw(_BOOL):
        path += b"?" + pick(draw, SEGMENTS) + pick(draw, (b"", b"=1", b"&b=%20", b"?x", b"/y"))
    return path + pick(draw, (b"",) * 8 + (b"#", b"#f", b"#f?q=1", b"#/z"))


@st.composite
def targets(draw: st.DrawFn) -> bytes:
    """Any of the four request-target forms, with odd schemes and authorities."""
    form = pick(draw, ("origin", "absolute", "authority", "asterisk", "odd"))
    if form == "origin":
        return draw(origin_targets())
    if form == "asterisk":
        return b"*"
    if form == "odd":
        return pick(draw, (b"", b"a", b"%2F", b"/a b", b"/\x00", b"/\xff", b"//x/y", b"?q"))
    host = pick(draw, (b"example.com", b"example.com:8080", b"[::1]", b"u:p@example.com", b"",
                                 b"other", b"a?b"))
    if form == "authority":
        return host + pick(draw, (b":443", b"", b":"))
    scheme = pick(draw, (b"http", b"https", b"HTTP", b"ftp", b"", b"http:"))
    tail = draw(origin_targets()) if draw(_BOOL) else pick(draw, (b"", b"?q=1", b"#f", b"?q=1#f"))
    return scheme + b"://" + host + tail


@st.composite
def seeds(draw: st.DrawFn) -> Draft:
    """A valid request."""
    kind = pick(draw, ("get", "post", "chunked", "head", "options", "absolute", "http10"))
    draft = Draft(target=draw(origin_targets()).split(b"#")[0], fields=[b"Host: example.com"])
    if kind == "post":
        draft.method, draft.body = b"POST", draw(_BODY)
        draft.fields.append(b"Content-Length: %d" % len(draft.body))
    elif kind == "chunked":
        draft.method = b"POST"
        draft.fields.append(b"Transfer-Encoding: chunked")
        draft.chunks = [Chunk(data) for data in draw(_CHUNK_DATA)]
        draft.chunks.append(Chunk(b"", b"0"))
        draft.trailers = list(pick(draw, ((), (), (b"X-T: v",))))
    elif kind == "head":
        draft.method = b"HEAD"
    elif kind == "options":
        draft.method, draft.target = b"OPTIONS", b"*"
    elif kind == "absolute":
        draft.target = b"http://example.org:8000" + draft.target
    elif kind == "http10":
        draft.version = b"HTTP/1.0"
        draft.fields[0:1] = list(pick(draw, ((), (b"Host: example.com",), (b"Connection: keep-alive",))))
    if draw(_BOOL):
        draft.fields.append(b"Connection: " + pick(draw, (b"keep-alive", b"close")))
    for extra in draw(_EXTRA_FIELDS):
        draft.fields.insert(upto(draw, len(draft.fields)), extra)
    return draft


# -- mutations: each changes one part of a draft ---------------------------------------------


def _method(draw: st.DrawFn, draft: Draft) -> None:
    draft.method = pick(draw, METHODS)


def _target(draw: st.DrawFn, draft: Draft) -> None:
    draft.target = draw(targets())


def _version(draw: st.DrawFn, draft: Draft) -> None:
    draft.version = pick(draw, VERSIONS)


def _separator(draw: st.DrawFn, draft: Draft) -> None:
    odd = pick(draw, LINE_SEPARATORS)
    draft.separators = pick(draw, ((odd, b" "), (b" ", odd), (odd, odd)))


def _host(draw: st.DrawFn, draft: Draft) -> None:
    line = b"Host: " + pick(draw, HOSTS)
    if draw(_BOOL):
        draft.set_field(b"host", line)
    else:
        draft.fields.append(line)


def _connection(draw: st.DrawFn, draft: Draft) -> None:
    draft.fields.insert(upto(draw, len(draft.fields)),
                        b"Connection: " + pick(draw, CONNECTION_VALUES))


def _odd_field(draw: st.DrawFn, draft: Draft) -> None:
    draft.fields.insert(upto(draw, len(draft.fields)), pick(draw, ODD_FIELDS))


def _content_length(draw: st.DrawFn, draft: Draft) -> None:
    n = len(draft.body)
    value = pick(draw, CL_FORMS).format(n=n, m=n + 1, k=max(n - 1, 0))
    line = b"Content-Length: " + value.encode()
    how = pick(draw, ("replace", "add", "add"))
    if how == "replace":
        draft.set_field(b"content-length", line)
    else:
        draft.fields.insert(upto(draw, len(draft.fields)), line)


def _transfer_encoding(draw: st.DrawFn, draft: Draft) -> None:
    line = b"Transfer-Encoding: " + pick(draw, TE_VALUES)
    if draw(_BOOL):
        draft.set_field(b"transfer-encoding", line)
    else:
        draft.fields.insert(upto(draw, len(draft.fields)), line)
    if draft.chunks is None and draw(_BOOL):
        draft.chunks = [Chunk(draft.body), Chunk(b"", b"0")] if draft.body else [Chunk(b"", b"0")]


def _chunk(draw: st.DrawFn, draft: Draft) -> None:
    if draft.chunks is None:
        draft.chunks = [Chunk(b"", b"0")]
        draft.fields.append(b"Transfer-Encoding: chunked")
    chunk = draft.chunks[upto(draw, len(draft.chunks) - 1)]
    part = pick(draw, ("size", "extension", "end", "trailer", "final", "last"))
    n = len(chunk.data)
    if part == "size":
        chunk.size = pick(draw, CHUNK_SIZE_FORMS).format(n=n, m=n + 1, k=max(n - 1, 0)).encode()
    elif part == "extension":
        chunk.extension = pick(draw, CHUNK_EXTENSIONS)
    elif part == "end":
        chunk.end = pick(draw, DATA_ENDS)
    elif part == "trailer":
        draft.trailers.append(pick(draw, TRAILERS))
    elif part == "final":
        draft.final = pick(draw, FINAL_LINE_ENDS)
    else:
        draft.chunks[-1].size = pick(draw, LAST_CHUNKS)


def _body(draw: st.DrawFn, draft: Draft) -> None:
    """Body bytes the framing does not announce (or fewer than it does)."""
    draft.body = pick(draw, (draft.body + b"x", draft.body[:-1], b"", b"GET / HTTP/1.1\r\n\r\n"))


def _long_line(draw: st.DrawFn, draft: Draft) -> None:
    size = pick(draw, LONG_SIZES)
    if draw(_BOOL):
        draft.target = b"/" + b"a" * size
    else:
        draft.fields.append(b"X-Long: " + b"v" * size)


def _many_fields(draw: st.DrawFn, draft: Draft) -> None:
    draft.fields += [b"X-Many-%d: v" % i for i in range(pick(draw, (24, 28, 29, 30, 40)))]


def _field_edit(draw: st.DrawFn, draft: Draft) -> None:
    """Change one field line as a whole: case, fold, space before the colon, duplicate, drop."""
    if not draft.fields:
        draft.fields.append(b"X-Only: v")
    index = upto(draw, len(draft.fields) - 1)
    line = draft.fields[index]
    edit = pick(draw, ("fold", "space_before_colon", "upper", "lower", "duplicate", "drop"))
    name, _, value = line.partition(b":")
    if edit == "fold":
        cut = upto(draw, len(value))
        line = name + b":" + value[:cut] + CRLF + pick(draw, (b" ", b"\t", b"  ")) + value[cut:]
    elif edit == "space_before_colon":
        line = name + pick(draw, (b" ", b"\t", b"  ")) + b":" + value
    elif edit == "upper":
        line = line.upper()
    elif edit == "lower":
        line = line.lower()
    elif edit == "duplicate":
        draft.fields.insert(index, line)
    else:
        del draft.fields[index]
        return
    draft.fields[index] = line


def _byte(draw: st.DrawFn, draft: Draft) -> None:
    """Insert, replace or delete one byte in the request line or a field: control bytes, NUL,
    bare CR or LF, high bytes and delimiters where they do not belong."""
    in_line = not draft.fields or draw(_BOOL)
    text = draft.request_line() if in_line else draft.fields[index := upto(draw, len(draft.fields) - 1)]
    position = upto(draw, len(text))
    edit = pick(draw, ("insert", "replace", "delete"))
    byte = pick(draw, SPECIAL_BYTES)
    if edit == "insert":
        text = text[:position] + byte + text[position:]
    elif edit == "replace":
        text = text[:position] + byte + text[position + 1:]
    else:
        text = text[:position] + text[position + 1:]
    if in_line:
        draft.line = text
    else:
        draft.fields[index] = text


MUTATIONS: tuple[Callable[[st.DrawFn, Draft], None], ...] = (
    _method, _target, _version, _separator, _host, _connection, _odd_field, _content_length,
    _transfer_encoding, _chunk, _chunk, _body, _long_line, _many_fields, _field_edit, _byte, _byte,
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """One request: a valid seed with zero to three mutations, after (rarely) empty lines."""
    draft = draw(seeds())
    for _ in range(pick(draw, (0, 0, 0, 1, 1, 1, 2, 3))):
        pick(draw, MUTATIONS)(draw, draft)
    return pick(draw, LEADING) + draft.render()


@dataclass(frozen=True)
class Chunking:
    """How a case's bytes are handed to ``send``: whole; split at ``cuts`` (fractions of the
    length, so a shrunk case keeps its shape); or trickled ``size`` bytes per send."""

    kind: str = "whole"
    cuts: tuple[float, ...] = ()
    size: int = 1

    def pieces(self, data: bytes) -> list[bytes]:
        if self.kind == "trickle":
            return [data[i:i + self.size] for i in range(0, len(data), self.size)]
        points = sorted({int(cut * len(data)) for cut in self.cuts} - {0, len(data)})
        bounds = [0, *points, len(data)]
        return [data[a:b] for a, b in pairwise(bounds) if b > a]


@dataclass(frozen=True)
class Case:
    """One fuzz case: the bytes a client sends on one connection, how, and whether it then keeps
    its side open (``hold``: the server must end a stalled request on its own timeouts) instead
    of half-closing (the fast way to end a case the server would otherwise wait on)."""

    data: bytes
    chunking: Chunking = Chunking()
    hold: bool = False

    def __repr__(self) -> str:
        return f"Case(data={self.data!r}, chunking={self.chunking!r}, hold={self.hold})"


_PIPELINE = st.lists(requests(), min_size=1, max_size=3)


def _one_in(n: int) -> tuple[bool, ...]:
    return (False,) * (n - 1) + (True,)


def cases(hold_one_in: int = 30, trickle_one_in: int = 4) -> st.SearchStrategy[Case]:
    """Cases of one to three pipelined requests, one in six truncated at a random point.

    ``hold_one_in``: about one case in this many keeps its side open after sending, so the server
    must end a stalled request itself (each such case costs up to the header timeout);
    ``trickle_one_in``: about one in this many is trickled one to three bytes per send (the
    slowest way to send); the rest are sent whole or split at one to three random points.
    """

    @st.composite
    def build(draw: st.DrawFn) -> Case:
        data = b"".join(draw(_PIPELINE))
        if pick(draw, _one_in(6)):
            data = data[:upto(draw, len(data))]
        if pick(draw, _one_in(trickle_one_in)):
            chunking = Chunking("trickle", size=pick(draw, (1, 2, 3)))
        elif draw(_BOOL):
            cuts = draw(_CUTS)
            chunking = Chunking("split", cuts=tuple(cuts))
        else:
            chunking = Chunking()
        return Case(data, chunking, hold=pick(draw, _one_in(hold_one_in)))

    return build()
