"""``python -m benchmarks.chaos``: see benchmarks/README.md."""

import sys

from benchmarks.chaos.cli import main

sys.exit(main())
