"""A property-based fuzzer for forkserve's HTTP/1.1 request path (see README.md here).

Hypothesis generates request byte streams (strategies), which are sent to a real forkserve
process in several chunkings (wire), judged by oracles, the main one a differential against h11
(reference, oracles), with a differential between forkserve's two parsers in process (parsers),
and run as a short test in the suite (test_fuzz) or as a long run
(``python -m tests.fuzz``; runner, shrink, __main__).

The modules import the test helpers (``conftest.Server``, ``http_wire``) the way the tests do,
with ``tests/`` on ``sys.path``: pytest puts it there; a long run started with ``python -m``
gets it here.

Hypothesis keeps a cache of the constants it finds in the code under test (apart from the example
database, which every run here turns off) in ``.hypothesis/`` of the current directory; it goes to
the temp directory instead, so a run writes nothing into the checkout.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "forkserve-fuzz-hypothesis"))
