"""A property-based fuzzer for forkserve's HTTP/1.1 request path (see README.md here).

Hypothesis generates request byte streams (strategies), which are sent to a real forkserve
process in several chunkings (wire), judged by oracles, the main one a differential against h11
(reference, oracles), and run as a short test in the suite (test_fuzz) or as a long run
(``python -m tests.fuzz``; runner, shrink, __main__).

The modules import the test helpers (``conftest.Server``, ``http_wire``) the way the tests do,
with ``tests/`` on ``sys.path``: pytest puts it there; a long run started with ``python -m``
gets it here.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
