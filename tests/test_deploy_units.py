"""The shipped systemd units, logrotate snippet and production config: valid, in agreement with
forkserve and with each other, and working where they can be run here.

The units are checked by systemd's own parser (``systemd-analyze verify``, which runs without a
running systemd). Socket activation and sd_notify themselves are exercised by the supervision
tests, which pass a socket and a NOTIFY_SOCKET to a real forkserve.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conf_template import render
from conftest import ROOT, wait_for
from system_programs import require_program

from forkserve.master.arbiter import HANDLED_SIGNALS
from forkserve.process.exits import EXIT_BOOT_FAILED, EXIT_USAGE
from forkserve.settings.registry import defaults
from forkserve.settings.resolve import resolve

CONF = ROOT / "conf"
SERVICE = CONF / "forkserve.service"
SOCKET = CONF / "forkserve.socket"
LOGROTATE = CONF / "logrotate.forkserve"
PRODUCTION = CONF / "forkserve.production.conf.py"
NGINX = CONF / "nginx.conf"


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values...]}} (keys may repeat in systemd units)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    """A systemd time span such as '45', '45s', '1min 30s' in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


def current_user_and_group() -> tuple[str, str]:
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


@pytest.fixture
def rendered_units(tmp_path: Path) -> tuple[Path, Path]:
    service = tmp_path / "forkserve.service"
    socket_unit = tmp_path / "forkserve.socket"
    service.write_text(render(SERVICE, {
        "FORKSERVE": f"{sys.executable} -m forkserve", "CONFIG": str(PRODUCTION), "APP_DIR": str(ROOT),
        "USER": "forkserve", "GROUP": "forkserve",
    }))
    socket_unit.write_text(render(SOCKET, {"NGINX_GROUP": "www-data"}))
    return service, socket_unit


def test_systemd_units_pass_systemd_analyze_verify(rendered_units, tmp_path):
    analyze = require_program("systemd-analyze", "systemd's own unit checker")
    result = subprocess.run([analyze, "verify", *map(str, rendered_units)],
                            capture_output=True, text=True, timeout=60, check=False)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if str(tmp_path) in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_service_unit_is_hardened(rendered_units):
    # systemd's own exposure rating (0 best .. 10 worst): at most 5.0 ("MEDIUM" starts above).
    analyze = require_program("systemd-analyze", "systemd's own unit checker")
    service, _ = rendered_units
    result = subprocess.run([analyze, "security", "--offline=yes", "--threshold=50", str(service)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_conf_files_agree_with_forkserve_and_each_other():
    production = resolve(["-c", str(PRODUCTION)], {})
    assert not production.warnings, production.warnings
    service = unit_settings(SERVICE.read_text())["Service"]
    socket_unit = unit_settings(SOCKET.read_text())["Socket"]

    assert service["Type"] == ["notify"]
    assert service["ExecStart"] == ["@FORKSERVE@ -c @CONFIG@"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"] and "SIGHUP" in HANDLED_SIGNALS
    assert service["KillSignal"] == ["SIGTERM"] and "SIGTERM" in HANDLED_SIGNALS
    assert service["KillMode"] == ["mixed"]  # TERM to the master only: it drains the workers
    stop_budget = seconds(service["TimeoutStopSec"][0])
    for config in (defaults(), production):
        assert stop_budget >= config.shutdown_delay + config.graceful_timeout + 5
    assert {int(code) for code in service["RestartPreventExitStatus"][0].split()} == {EXIT_USAGE, EXIT_BOOT_FAILED}
    assert production.pidfile.startswith(f"/run/{service['RuntimeDirectory'][0]}/")
    for log_file in (production.errorlog, production.accesslog):
        assert log_file.startswith(f"/var/log/{service['LogsDirectory'][0]}/")

    assert production.bind == [f"unix:{socket_unit['ListenStream'][0]}"]
    assert int(socket_unit["Backlog"][0]) == production.backlog

    postrotate = LOGROTATE.read_text().split("postrotate", 1)[1].split("endscript", 1)[0]
    assert 'kill -USR1 "$(cat @PIDFILE@)"' in postrotate and "SIGUSR1" in HANDLED_SIGNALS

    # What conf/nginx.conf says goes with forkserve's settings.
    nginx = NGINX.read_text()
    upstreams = re.findall(r"upstream (\w+) \{(.*?)\}", nginx, re.DOTALL)
    assert {name for name, _ in upstreams} == {"forkserve_tcp", "forkserve_unix", "forkserve_hosts"}
    for name, block in upstreams:
        if name == "forkserve_hosts":  # several hosts: no pool (see test_multihost.py)
            assert "keepalive" not in block, block
            continue
        pool_timeout = re.search(r"keepalive_timeout (\S+);", block)
        assert pool_timeout and production.keepalive > seconds(pool_timeout.group(1)), name
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", nginx)
    assert read_timeout and production.timeout < int(read_timeout.group(1))
    body = re.search(r"client_max_body_size (\d+)m;", nginx)
    assert body and production.limit_request_body == int(body.group(1)) * 1024 * 1024


def test_production_config_serves_the_app(start_server, tmp_path):
    # The file as shipped; only the paths that need root (and the bind) are overridden.
    error_log = tmp_path / "error.log"
    server = start_server("-c", str(PRODUCTION), "-w", "2", "--error-logfile", str(error_log),
                          "--access-logfile", str(tmp_path / "access.log"), "--pid", str(tmp_path / "pid"))
    assert requests.get(f"{server.url}/hello", timeout=10).text == "Hello, world!"
    wait_for(lambda: "production config loaded; ready to serve" in error_log.read_text(), timeout=10,
             message="the when_ready hook's line in the error log")
    assert "[ERROR]" not in error_log.read_text()


def open_files(pids: list[int]) -> set[str]:
    found = set()
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                found.add(os.readlink(f"/proc/{pid}/fd/{name}"))
            except OSError:
                pass
    return found


def test_logrotate_snippet_rotates_and_forkserve_reopens(start_server, tmp_path):
    logrotate = require_program("logrotate", "conf/logrotate.forkserve is run for real")
    logs, pidfile = tmp_path / "logs", tmp_path / "forkserve.pid"
    logs.mkdir()
    error_log = logs / "error.log"
    server = start_server("-w", "2", "--error-logfile", str(error_log), "--pid", str(pidfile),
                          "demo.wsgi:application")
    workers = server.wait_workers(2)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(server.pid), timeout=10,
             message="forkserve to write its pidfile")
    user, group = current_user_and_group()
    config = tmp_path / "logrotate.conf"
    config.write_text(render(LOGROTATE, {"LOG_DIR": str(logs), "PIDFILE": str(pidfile), "USER": user,
                                         "GROUP": group}))

    result = subprocess.run([logrotate, "--force", "--state", str(tmp_path / "state"), str(config)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    rotated = logs / "error.log.1"  # delaycompress: the newest rotation stays uncompressed
    assert "booting worker" in rotated.read_text()

    # USR1 reached the master, which passed it on: no process still writes to the rotated file.
    wait_for(lambda: str(rotated) not in open_files([server.pid, *workers]), timeout=10,
             message="master and workers to reopen their log files")
    assert requests.get(f"{server.url}/crash", timeout=10).status_code == 500
    wait_for(lambda: "error handling GET /crash" in error_log.read_text(), timeout=10,
             message="the worker's error in the new log file")
    assert "/crash" not in rotated.read_text()
