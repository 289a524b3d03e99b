"""The scoreboard's reads that workers make of one another (the rest is covered end to end)."""

from __future__ import annotations

from forkserve.process.scoreboard import NOT_ACCEPTING, Scoreboard


def test_fewest_held_elsewhere_counts_only_siblings_that_accept_now() -> None:
    board = Scoreboard(8)
    for slot in range(4):
        board.claim(slot, 100 + slot)
        board.writer(slot).ready(1.0)
    board.claim(4, 100, owner=0, thread=1)  # an app thread of worker 0: not a worker
    board.writer(4).ready(1.0)
    for slot, held in ((0, 5), (1, 3), (2, 2), (3, 1), (4, 0)):
        board.writer(slot).held(held)
    assert board.fewest_held_elsewhere(0) == 1
    assert board.fewest_held_elsewhere(3) == 2  # (its own count is not a sibling's)
    board.writer(3).begin(2.0, b"GET /slow")  # a sync worker in the app does not accept
    assert board.fewest_held_elsewhere(0) == 2
    board.writer(2).held(NOT_ACCEPTING)  # at its connection limit, or leaving newcomers to others
    assert board.fewest_held_elsewhere(0) == 3
    board.writer(1).stopping()
    assert board.fewest_held_elsewhere(0) == NOT_ACCEPTING
