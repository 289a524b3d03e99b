"""System programs the tests run for real (nginx, HAProxy, logrotate, ...): skipped on a
contributor's machine that lacks them, required under CI.

README's two commands must give a new contributor a green run in a fresh virtualenv, whatever
system packages the machine has: a test that needs a missing program is skipped, and the skip
reason is the exact command that installs it. CI is the place where every one of these tests
must run, so there (``CI=true``, which ``.ci/run`` exports after installing them all) a missing
program fails the test instead: a broken CI image can never turn into quietly skipped tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NoReturn

import pytest

# Program -> the Debian/Ubuntu package that ships it (what .ci/run installs).
PACKAGES = {
    "nginx": "nginx",
    "haproxy": "haproxy",
    "logrotate": "logrotate",
    "systemd-analyze": "systemd",
    "wrk": "wrk",
    "openssl": "openssl",
    "ip": "iproute2",
    "unshare": "util-linux",
}
# sbin directories are often off a normal user's PATH although the programs are installed there.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def under_ci() -> bool:
    """True when the run is CI's (``CI=true``, the convention CI services and .ci/run follow)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def install_command(program: str) -> str:
    """The command that installs ``program`` on Debian or Ubuntu."""
    return f"sudo apt-get install {PACKAGES[program]}"


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason`` locally; fail it under CI, where nothing may be skipped."""
    if under_ci():
        pytest.fail(f"{reason} [CI=true: a missing system program fails instead of skipping]",
                    pytrace=False)
    pytest.skip(reason)


def find_program(program: str) -> str | None:
    """The program's path on PATH or in the sbin directories, or None."""
    return shutil.which(program) or shutil.which(program, path=os.pathsep.join(SBIN))


def require_program(program: str, why: str = "") -> str:
    """The path of ``program``; skips (locally) or fails (CI) the test when it is not installed."""
    found = find_program(program)
    if found is None:
        purpose = f" ({why})" if why else ""
        unavailable(f"{program} is not installed{purpose}: install it with '{install_command(program)}' "
                    "(.ci/run installs every system program the tests use)")
    return found


def require_network_namespaces() -> str:
    """The ``ip`` command, when this process may create network namespaces with it (root, and a
    kernel that allows them); skips locally or fails under CI otherwise."""
    ip = require_program("ip", "network namespaces: the multi-host and container tests")
    if os.geteuid() != 0:
        unavailable("network namespaces need root: run this test as root "
                    "(e.g. 'sudo -E python -m pytest tests/test_multihost.py'); CI runs as root")
    probe = subprocess.run([ip, "netns", "list"], capture_output=True, text=True, timeout=10, check=False)
    if probe.returncode != 0:
        unavailable(f"'ip netns' does not work here ({probe.stderr.strip()}): the kernel or the "
                    f"container forbids network namespaces; '{install_command('ip')}' brings the command")
    return ip
