"""The ``forkserve`` command: resolve the settings, then check, print, or hand them to the master.

The top of the import order and the only importer of :mod:`forkserve.master`: the master is
handed the resolved configuration and never imports the command line (HUP resolves again
through :mod:`forkserve.settings.resolve`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from forkserve.process.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from forkserve.settings.resolve import UsageError, print_config, resolve


def _fail(message: str, code: int) -> int:
    print(f"forkserve: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``forkserve`` command. Returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["top"]:
        from forkserve.stats.top import main as top_main

        return top_main(argv[1:])
    if argv[:1] == ["ctl"]:
        from forkserve.stats.ctl import main as ctl_main

        return ctl_main(argv[1:])
    try:
        config = resolve(argv, os.environ)
    except UsageError as error:
        return _fail(str(error), EXIT_USAGE)
    if config.print_config:
        try:
            print_config(config)
        except BrokenPipeError:  # e.g. piped into head
            sys.stderr.close()
        return EXIT_OK
    if not config.wsgi_app:
        return _fail("no application given; try: forkserve demo.wsgi:application", EXIT_USAGE)

    from forkserve.master import lifecycle
    from forkserve.master.arbiter import Arbiter
    from forkserve.process import logs, privileges
    from forkserve.process.loader import AppLoadError, load_app, prepare_import_path

    try:
        logs.setup(config)
    except (OSError, ValueError) as error:
        return _fail(f"cannot set up logging: {error}", EXIT_USAGE)
    for warning in config.warnings:
        logs.error_log.warning(warning)
    for item in config.raw_env:
        name, _, value = item.partition("=")
        os.environ[name] = value

    try:  # an unknown user or group is a config error
        privileges.resolve(config)
    except privileges.PrivilegeError as error:
        return _fail(str(error), EXIT_USAGE)
    from forkserve.worker.tls import check_tls

    problem = check_tls(config)  # a certificate that does not load is a config error too
    if problem is not None:
        return _fail(problem, EXIT_USAGE)

    if config.check_config:
        try:
            prepare_import_path(config)
            load_app(config.wsgi_app)
        except AppLoadError as error:
            print(f"forkserve: check failed: {error}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"forkserve: configuration OK; app {config.wsgi_app} loaded")
        return EXIT_OK
    try:  # pid file, umask, warnings that must reach the terminal
        lifecycle.prepare(config)
    except lifecycle.StartError as error:
        return _fail(str(error), error.exit_code)
    return Arbiter(config).run()
