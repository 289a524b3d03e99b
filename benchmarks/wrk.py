"""Driving ``wrk`` and reading its results.

Every run uses ``lua/bench.lua``: its ``done()`` hook prints wrk's exact counters and latency
percentiles (in microseconds) as one JSON line, which is parsed here; ``--latency`` is passed too
so the human-readable distribution is in the captured output when a run is shown or fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "lua" / "bench.lua"
# bench.lua plus a count of requests written (costs wrk a Lua call per request): for the
# scenarios where a server may stop answering, which wrk's own counters cannot show.
COUNTED_SCRIPT = SCRIPT.with_name("counted.lua")
MARKER = "BENCH-JSON "
EXTRA_WAIT = 30.0


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result line."""


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    duration_s: float
    bytes_read: int
    errors: dict[str, int]
    latency_us: dict[str, float]
    output: str
    sent: int = -1  # requests written (COUNTED_SCRIPT only; -1 when not counted)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        """Socket errors and non-2xx/3xx answers together: anything that was not a good reply."""
        return sum(self.errors.values())

    @property
    def served(self) -> int:
        """Responses with a 2xx/3xx status."""
        return self.requests - self.errors.get("status", 0)

    @property
    def unanswered(self) -> int:
        """Requests written that got neither a response nor a socket error by the end of the run
        (0 when not counted). A healthy server leaves about one per connection (in flight when
        wrk stopped); a server that stopped answering leaves every request it was sent."""
        if self.sent < 0:
            return 0
        failed = self.errors.get("read", 0) + self.errors.get("write", 0)
        return max(0, self.sent - self.requests - failed)


def find_wrk() -> str:
    """The wrk executable's path; WrkError saying how to install it when it is missing."""
    path = shutil.which("wrk") or ("/usr/bin/wrk" if Path("/usr/bin/wrk").exists() else None)
    if path is None:
        raise WrkError("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    return path


def wrk_command(wrk: str, url: str, connections: int, duration_s: int, timeout: str,
                script_args: tuple[str, ...], script: Path = SCRIPT) -> list[str]:
    """The argv for one run: one wrk thread (it must not take the servers' cores)."""
    command = [
        wrk, "--threads", "1", "--connections", str(connections), "--duration", f"{duration_s}s",
        "--timeout", timeout, "--latency", "--script", str(script), url,
    ]
    if script_args:
        command += ["--", *script_args]
    return command


def parse_output(output: str) -> WrkResult:
    """The result from wrk's stdout (the bench.lua JSON line). WrkError when there is none."""
    for line in output.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER):])
            return WrkResult(
                requests=int(data["requests"]),
                duration_s=data["duration_us"] / 1e6,
                bytes_read=int(data["bytes"]),
                errors={name: int(count) for name, count in data["errors"].items()},
                latency_us={name: float(value) for name, value in data["latency_us"].items()},
                output=output,
                sent=int(data.get("sent", -1)),
            )
    raise WrkError(f"wrk printed no result line:\n{output}")


def run_wrk(wrk: str, url: str, connections: int, duration_s: int, timeout: str,
            script_args: tuple[str, ...], script: Path = SCRIPT) -> WrkResult:
    """Run wrk once against ``url`` and return what it measured."""
    command = wrk_command(wrk, url, connections, duration_s, timeout, script_args, script)
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=duration_s + EXTRA_WAIT, check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk did not finish: {' '.join(command)}") from None
    if completed.returncode != 0:
        raise WrkError(
            f"wrk exited with {completed.returncode}: {' '.join(command)}\n"
            f"{completed.stdout}{completed.stderr}"
        )
    return parse_output(completed.stdout + completed.stderr)
