"""The misbehaving clients of benchmarks/slowclients.py do what they claim, against a real
forkserve: the benchmarks and the chaos suite judge servers by these counts, so the counts must
be right. Each test is short; every client closes its sockets on the way out."""

from __future__ import annotations

import resource
import time

from conftest import wait_for

from benchmarks.apps.bench_apps import DOWNLOAD_SIZE
from benchmarks.slowclients import (
    IdleKeepAliveClients,
    ProtocolError,
    ResponseParser,
    SlowReaders,
    StalledClients,
    raise_fd_limit,
)

APP = "benchmarks.apps.bench_apps:hello_and_download"


def test_stalled_clients_keep_their_count_when_the_server_times_them_out(start_server):
    server = start_server("-w", "1", "--header-timeout", "0.3", APP)
    with StalledClients(server.address[1], 3) as stalled:
        wait_for(lambda: stalled.stats.answered[408] >= 2, 10, message="two 408s to stalled clients")
    stats = stalled.stats
    assert stats.opened >= 3 + stats.closed_by_server - 1  # each closed one was replaced
    assert stats.open_at_end == 3
    assert not stats.connect_failures
    assert "408" in stats.summary()


def test_idle_clients_count_only_the_connections_the_server_keeps(start_server):
    server = start_server("-w", "2", "--keep-alive", "0.5", APP)
    idle = IdleKeepAliveClients(server.address[1], 1).start(timeout=10)
    try:
        assert idle.stats.answered == 1
        assert idle.still_open() == 1
        wait_for(lambda: idle.still_open() == 0, 5, message="the server to close the idle connection")
    finally:
        stats = idle.stop()
    assert stats.open_at_end == 0
    assert not stats.failures


def test_slow_readers_read_at_their_rate_and_check_the_length(start_server):
    server = start_server("-w", "1", APP)
    started = time.monotonic()
    with SlowReaders(server.address[1], 1, "/download", rate=4 * DOWNLOAD_SIZE,
                     expected_length=DOWNLOAD_SIZE) as readers:
        wait_for(lambda: readers.stats.completed >= 2, 20, message="two downloads")
    elapsed = time.monotonic() - started
    stats = readers.stats
    assert not stats.failures, stats.summary()
    # 2 MiB at 4 MiB/s takes at least half a second: the throttle works.
    assert elapsed >= 0.45
    assert stats.bytes_read >= 2 * DOWNLOAD_SIZE


def test_response_parser_reads_pieces_and_refuses_what_it_cannot_frame():
    response = ResponseParser()
    for piece in (b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 5\r\n\r\nhel", b"loHTTP/1.1"):
        response.feed(piece)
    assert (response.complete, response.status, response.body, response.extra) == (
        True, 200, b"hello", b"HTTP/1.1")
    assert response.keep_alive
    closing = ResponseParser()
    closing.feed(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
    assert not closing.complete
    closing.eof()
    assert closing.complete and closing.body == b"until close" and not closing.keep_alive
    for bad in (b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"):
        try:
            ResponseParser().feed(bad)
        except ProtocolError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_fd_limit_is_raised_towards_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        now = raise_fd_limit(min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096)
        assert now >= min(soft, 4096)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == now
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
