"""conf/kubernetes/ and conf/Containerfile checked against forkserve's own settings, and the
Containerfile's command run as it is written, as PID 1.

The settings are those the container really gets: the config file the image's CMD names (copied
there from conf/ by a COPY line), with the image's ENV and the Deployment's env, on top of
forkserve's defaults — so changing a default, the fleet config or a manifest shows up here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, children_of, process_title, wait_for
from system_programs import require_network_namespaces, require_program
from test_deploy_containers import namespace_pid

from forkserve.settings.cpus import cgroup_cpu_limit, choose_budget
from forkserve.settings.resolve import resolve

CONTAINERFILE = ROOT / "conf" / "Containerfile"
MANIFESTS = ROOT / "conf" / "kubernetes" / "forkserve.yaml"
NODE_CPUS = 64  # a large node: the container's CPU limit, not the node, must set the worker count


@dataclass
class Image:
    """What conf/Containerfile declares, instruction by instruction."""

    workdir: str = "/"
    user: str = "root"
    env: dict[str, str] = field(default_factory=dict)
    copies: list[tuple[str, str]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    exposed: set[int] = field(default_factory=set)
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)

    def in_workdir(self, path: str) -> str:
        """``path`` relative to WORKDIR (how the command, run from WORKDIR, reaches it)."""
        absolute = path if path.startswith("/") else f"{self.workdir.rstrip('/')}/{path}"
        return os.path.relpath(absolute, self.workdir)

    def source_of(self, path: str) -> Path:
        """The file of this checkout a COPY line put at ``path`` (relative to WORKDIR)."""
        for source, dest in self.copies:
            if source != "." and self.in_workdir(dest) == self.in_workdir(path):
                return ROOT / source
        raise AssertionError(f"no COPY puts a file at {path}")

    @property
    def command(self) -> list[str]:
        return self.entrypoint + self.cmd


def containerfile() -> Image:
    image = Image()
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "WORKDIR":
            image.workdir = rest.strip()
        elif keyword == "USER":
            image.user = rest.strip()
        elif keyword == "ENV":
            name, _, value = rest.strip().partition("=")
            image.env[name] = value
        elif keyword == "COPY":
            source, dest = rest.split()
            image.copies.append((source, dest))
        elif keyword == "RUN":
            image.runs.append(rest)
        elif keyword == "EXPOSE":
            image.exposed |= {int(port) for port in rest.split()}
        elif keyword in ("CMD", "ENTRYPOINT"):
            command = json.loads(rest)  # the exec form: forkserve itself is PID 1, no shell
            setattr(image, keyword.lower(), command)
    return image


def manifests() -> dict[str, dict[str, Any]]:
    documents = [doc for doc in yaml.safe_load_all(MANIFESTS.read_text()) if doc]
    return {doc["kind"]: doc for doc in documents}


def container_settings(image: Image, pod_env: dict[str, str]):  # -> forkserve Config
    """The settings forkserve resolves in the container: CMD's arguments, its config file from
    this checkout, the image's ENV and the pod's env."""
    assert image.command[0] == "forkserve", image.command
    args = list(image.command[1:])
    config = args.index("-c") + 1
    args[config] = str(image.source_of(args[config]))
    return resolve(args, {**image.env, **pod_env})


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(item["containerPort"] for item in container["ports"] if item["name"] == port)


def cpu_quantity(value: str) -> float:
    return int(value[:-1]) / 1000 if value.endswith("m") else float(value)


def test_manifests_agree_with_forkserve_settings(tmp_path):
    kinds = manifests()
    assert set(kinds) == {"Deployment", "Service", "PodDisruptionBudget"}
    deployment = kinds["Deployment"]["spec"]
    pod = deployment["template"]["spec"]
    (container,) = pod["containers"]
    pod_env = {item["name"]: item["value"] for item in container.get("env", [])}
    image = containerfile()
    config = container_settings(image, pod_env)
    assert not config.warnings, config.warnings

    # Ports: the app's bind and the stats endpoint the probes read.
    (bind,) = config.bind
    assert port_number(container, "http") == int(bind.rsplit(":", 1)[1])
    assert port_number(container, "stats") == int(config.stats_bind.rsplit(":", 1)[1])
    assert image.exposed == {port_number(container, "http"), port_number(container, "stats")}
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz" and liveness["httpGet"]["path"] == "/healthz"
    for probe in (readiness, liveness):
        assert port_number(container, probe["httpGet"]["port"]) == port_number(container, "stats")

    # Stopping: preStop sends forkserve (PID 1) the TERM that starts shutdown_delay and waits as
    # long; the kubelet's TERM then ends it; the grace period covers the delay and the drain.
    hook = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert "kill -TERM 1" in hook
    sleep = re.search(r"sleep (\d+(?:\.\d+)?)", hook)
    assert sleep and float(sleep.group(1)) == config.shutdown_delay > 0, (hook, config.shutdown_delay)
    assert pod["terminationGracePeriodSeconds"] > config.shutdown_delay + config.graceful_timeout
    # A balancer probing /readyz like the readiness probe notices within the delay.
    noticed = readiness["periodSeconds"] * readiness["failureThreshold"] + readiness["timeoutSeconds"]
    assert noticed <= config.shutdown_delay
    # Liveness never fails a pod that serves a request up to forkserve's timeout.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= config.timeout

    # Workers: left to forkserve, which reads the CPU limit from the cgroup the container runs in
    # (the quota the kubelet writes to cpu.max), whatever the node's size.
    assert config.sources["workers"].startswith("default"), config.sources["workers"]
    assert "WEB_CONCURRENCY" not in {**image.env, **pod_env}
    limit = cpu_quantity(container["resources"]["limits"]["cpu"])
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cpu.max").write_text(f"{round(limit * 100000)} 100000\n")
    (tmp_path / "self-cgroup").write_text("0::/\n")
    quota = cgroup_cpu_limit(cgroup, tmp_path / "self-cgroup")
    assert quota == limit
    workers = 2 * choose_budget(NODE_CPUS, NODE_CPUS, quota).count + 1
    assert workers == 2 * math.ceil(limit) + 1
    assert f"starts\n            # 2 x {math.ceil(limit)} + 1 = {workers} workers" in MANIFESTS.read_text()

    # The pod runs as the image's unprivileged user.
    assert image.user not in ("root", "0")
    useradd = next(run for run in image.runs if "useradd" in run and run.split()[-1] == image.user)
    uid = int(re.search(r"--uid (\d+)", useradd).group(1))
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid


def test_service_and_budget_select_the_pods_and_updates_keep_capacity():
    kinds = manifests()
    deployment = kinds["Deployment"]["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    for selector in (deployment["selector"]["matchLabels"], kinds["Service"]["spec"]["selector"],
                     kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    (container,) = deployment["template"]["spec"]["containers"]
    (port,) = kinds["Service"]["spec"]["ports"]
    assert port_number(container, port["targetPort"]) == port_number(container, "http")
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert kinds["PodDisruptionBudget"]["spec"]["maxUnavailable"] < deployment["replicas"]


# -- the Containerfile's command, as PID 1 ------------------------------------------------------

PROBE = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as reply:
        print(reply.status, reply.read().decode(errors="replace"))
except urllib.error.HTTPError as error:
    print(error.code, error.read().decode(errors="replace"))
except OSError as error:
    print(0, error)
"""


def inside(ip: str, netns: str, url: str) -> tuple[int, str]:
    """GET ``url`` from inside the container's network namespace: (status, body); 0 when it
    could not connect."""
    completed = subprocess.run([ip, "netns", "exec", netns, sys.executable, "-c", PROBE, url],
                               capture_output=True, text=True, timeout=20, check=False)
    status, _, body = completed.stdout.partition(" ")
    return int(status or 0), body.strip()


@pytest.fixture
def container_namespace() -> tuple[str, str]:
    """A fresh network namespace (loopback only) for the container; removed afterwards with
    every process in it."""
    ip = require_network_namespaces()
    netns = f"fsv-{secrets.token_hex(3)}-ctr"
    subprocess.run([ip, "netns", "add", netns], check=True, timeout=10)
    try:
        subprocess.run([ip, "-n", netns, "link", "set", "lo", "up"], check=True, timeout=10)
        yield ip, netns
    finally:
        pids = subprocess.run([ip, "netns", "pids", netns], capture_output=True, text=True, timeout=10,
                              check=False).stdout.split()
        for pid in map(int, pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run([ip, "netns", "del", netns], timeout=10, check=False)


def test_containerfile_command_serves_as_pid_one_and_stops_on_term(container_namespace, tmp_path):
    ip, netns = container_namespace
    unshare = require_program("unshare", "the container's pid namespace")
    image = containerfile()
    # WORKDIR with the files the COPY lines put there (the project itself, COPY . and pip
    # install, is this checkout on PYTHONPATH).
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    for source, dest in image.copies:
        if source != ".":
            target = workdir / image.in_workdir(dest)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / source, target)
    env = {key: value for key, value in os.environ.items()
           if key not in ("WEB_CONCURRENCY", "PORT", "FORKSERVE_CMD_ARGS")}
    env.update(image.env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    # The command as written; its program found on PATH, where this Python's scripts are too.
    search = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    program = shutil.which(image.command[0], path=search)
    assert program, f"{image.command[0]} is not installed: pip install -e '.[test]'"
    log_path = tmp_path / "container.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [ip, "netns", "exec", netns, unshare, "--pid", "--fork", "--mount-proc", program, *image.command[1:]],
            cwd=workdir, env=env, stdout=log, stderr=log, start_new_session=True,
        )
    try:
        def master() -> int | None:
            if process.poll() is not None:
                raise AssertionError(f"the container exited with {process.returncode}:\n{log_path.read_text()}")
            found = [pid for child in children_of(process.pid) for pid in [child, *children_of(child)]
                     if process_title(pid).startswith("forkserve: master")]
            return found[0] if found else None

        master_pid = wait_for(master, timeout=20, message="forkserve's master in the container")
        assert namespace_pid(master_pid) == 1
        app = f"http://127.0.0.1:{port_number_of(image, 'app')}"
        stats = f"http://127.0.0.1:{port_number_of(image, 'stats')}"
        wait_for(lambda: inside(ip, netns, f"{stats}/readyz")[0] == 200, timeout=30, message="/readyz 200")
        assert inside(ip, netns, f"{app}/hello") == (200, "Hello, world!")

        os.kill(master_pid, signal.SIGTERM)  # what the preStop hook sends
        wait_for(lambda: inside(ip, netns, f"{stats}/readyz")[0] == 503, timeout=10, message="/readyz 503")
        assert inside(ip, netns, f"{app}/hello") == (200, "Hello, world!")  # serving on meanwhile
        os.kill(master_pid, signal.SIGTERM)  # the kubelet's, after the hook
        assert process.wait(40) == 0, log_path.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
    log = log_path.read_text()
    assert "TERM received again during shutdown_delay: graceful shutdown now" in log
    assert "master 1 exiting" in log


def port_number_of(image: Image, which: str) -> int:
    """The app's (bind) or the stats endpoint's port, from the settings the command resolves."""
    config = container_settings(image, {})
    address = config.bind[0] if which == "app" else config.stats_bind
    return int(address.rsplit(":", 1)[1])
