"""The chaos suite: forkserve disturbed under a checked load (``python -m benchmarks.chaos``).

See benchmarks/README.md. ``load.py`` is the load and its accounting, ``scenarios.py`` the
disturbances and the judging, ``cli.py`` the command line and the Markdown report.
"""
