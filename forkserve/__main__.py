"""``python -m forkserve``: the same as the ``forkserve`` command."""

import sys

from forkserve.cli import main

sys.exit(main())
