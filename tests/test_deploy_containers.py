"""Running in a container: worker count from the CPUs really usable, PORT, logs on stderr, PID 1."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests
from conftest import APPS, ROOT, children_of, free_port, process_title, wait_for
from system_programs import require_program

from forkserve.settings.cpus import CpuBudget, cgroup_cpu_limit, choose_budget

# -- the default worker count ------------------------------------------------------------------


def test_default_workers_follow_the_cpu_affinity_mask(start_server):
    # Pin this process to one CPU just while forking forkserve: the child inherits the mask.
    # With neither -w nor WEB_CONCURRENCY, forkserve must size itself from that one CPU.
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        server = start_server("demo.wsgi:application", ready=False)
    finally:
        os.sched_setaffinity(0, allowed)
    server.wait_ready()
    assert len(server.wait_workers(3)) == 3
    host = os.cpu_count() or 1
    why = f"CPU affinity mask of 1 of {host} CPUs" if host > 1 else "1 CPU"
    assert f"3 workers (default: 2 x 1 + 1 from the {why})" in server.log()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_cgroup_v2_limit_is_the_tightest_on_the_path(tmp_path):
    own = write(tmp_path / "proc-self-cgroup", "0::/system.slice/app.service\n")
    root = tmp_path / "cgroup"
    write(root / "system.slice" / "app.service" / "cpu.max", "max 100000\n")
    write(root / "system.slice" / "cpu.max", "250000 100000\n")
    write(root / "cpu.max", "400000 100000\n")
    assert cgroup_cpu_limit(root, own) == 2.5
    write(root / "system.slice" / "app.service" / "cpu.max", "50000 100000\n")
    assert cgroup_cpu_limit(root, own) == 0.5


def test_cgroup_v2_inside_a_container_namespace(tmp_path):
    # With a cgroup namespace the container sees itself at "/", its limit at the mount's top.
    own = write(tmp_path / "proc-self-cgroup", "0::/\n")
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "150000 100000\n")
    assert cgroup_cpu_limit(root, own) == 1.5
    write(root / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(root, own) is None


def test_cgroup_v1_quota_found_by_walking_up_from_the_host_path(tmp_path):
    # Docker on cgroup v1 without a cgroup namespace: /proc/self/cgroup names the host's path,
    # which does not exist under the container's mount; its own cgroup is the mount's top.
    own = write(tmp_path / "proc-self-cgroup",
                "12:memory:/docker/abc123\n4:cpu,cpuacct:/docker/abc123\n1:name=systemd:/docker/abc123\n")
    root = tmp_path / "cgroup"
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "150000\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(root, own) == 1.5
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")  # v1's "no limit"
    assert cgroup_cpu_limit(root, own) is None


def test_cgroup_v1_separate_cpu_hierarchy_and_bad_files(tmp_path):
    own = write(tmp_path / "proc-self-cgroup", "3:cpuset:/\n2:cpu:/batch\n1:cpuacct:/\n0::/\n")
    root = tmp_path / "cgroup"
    write(root / "cpu" / "batch" / "cpu.cfs_quota_us", "300000\n")
    write(root / "cpu" / "batch" / "cpu.cfs_period_us", "100000\n")
    write(root / "cpu" / "cpu.cfs_quota_us", "not a number\n")
    write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    write(root / "cpu.max", "garbage\n")
    assert cgroup_cpu_limit(root, own) == 3.0
    assert cgroup_cpu_limit(root, tmp_path / "missing") is None


def test_budget_takes_the_smaller_of_affinity_and_quota_rounded_up():
    assert choose_budget(8, 8, None) == CpuBudget(8, "8 CPUs")
    assert choose_budget(2, 8, None) == CpuBudget(2, "CPU affinity mask of 2 of 8 CPUs")
    assert choose_budget(8, 8, 1.5) == CpuBudget(2, "cgroup CPU quota of 1.5 CPUs")
    assert choose_budget(8, 8, 0.25) == CpuBudget(1, "cgroup CPU quota of 0.25 CPUs")
    assert choose_budget(1, 8, 4.0) == CpuBudget(1, "CPU affinity mask of 1 of 8 CPUs")
    assert choose_budget(1, 1, None) == CpuBudget(1, "1 CPU")


# -- PORT and stderr ------------------------------------------------------------------------


def test_port_environment_binds_all_interfaces_and_logs_go_to_stderr(start_server):
    port = free_port()
    server = start_server("-w", "1", "demo.wsgi:application", env={"PORT": str(port)},
                          address=("127.0.0.1", port))
    assert requests.get(f"http://127.0.0.1:{port}/hello", timeout=10).text == "Hello, world!"
    log = server.log()  # the subprocess's stderr
    assert f"listening at http://0.0.0.0:{port}" in log
    assert "[INFO] forkserve" in log and "[INFO] booting worker" in log
    assert server.stdout() == ""


# -- PID 1 ----------------------------------------------------------------------------------


def namespace_pid(host_pid: int) -> int:
    """A process's pid inside its own (innermost) pid namespace."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid line for {host_pid}")


@pytest.fixture
def as_pid_one():
    """Run forkserve as PID 1 of a new pid namespace (unshare), like a container's entrypoint."""
    unshare = require_program("unshare", "forkserve as PID 1 of a pid namespace")
    started: list[subprocess.Popen[bytes]] = []
    log = tempfile.NamedTemporaryFile(prefix="forkserve-pid1-", suffix=".txt", delete=False)  # noqa: SIM115

    def start(*args: str) -> tuple[subprocess.Popen[bytes], Path]:
        env = {key: value for key, value in os.environ.items() if key not in ("WEB_CONCURRENCY", "PORT")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(APPS), env.get("PYTHONPATH", "")])
        process = subprocess.Popen(
            [unshare, "--pid", "--fork", "--mount-proc", sys.executable, "-m", "forkserve", *args],
            cwd=str(ROOT), env=env, stdout=log, stderr=log, start_new_session=True,
        )
        started.append(process)
        return process, Path(log.name)

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
    log.close()
    os.unlink(log.name)


def test_as_pid_one_reaps_orphans_and_exits_cleanly(as_pid_one):
    port = free_port()
    unshare, log = as_pid_one("-w", "1", "-b", f"127.0.0.1:{port}", "orphan_maker:application")

    def master() -> int | None:
        if unshare.poll() is not None:
            raise AssertionError(f"unshare exited with {unshare.returncode}:\n{log.read_text()}")
        pids = [pid for pid in children_of(unshare.pid) if process_title(pid).startswith("forkserve: master")]
        return pids[0] if pids else None

    master_pid = wait_for(master, timeout=15, message="forkserve master inside the pid namespace")
    assert namespace_pid(master_pid) == 1
    wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=2).ok, timeout=15, message="a worker")

    orphan_ns_pid = requests.get(f"http://127.0.0.1:{port}/orphan", timeout=10).json()["orphan_pid"]

    def adopted_orphan() -> int | None:
        for pid in children_of(master_pid):
            if process_title(pid) == "sleep 30" and namespace_pid(pid) == orphan_ns_pid:
                return pid
        return None

    orphan = wait_for(adopted_orphan, timeout=10, message="the orphaned sleep to be re-parented to forkserve")
    os.kill(orphan, signal.SIGTERM)
    # Reaped means gone from /proc altogether; an unreaped child would linger as a zombie.
    wait_for(lambda: not Path(f"/proc/{orphan}").exists(), timeout=10,
             message=f"forkserve (PID 1) to reap its adopted orphan {orphan}")

    os.kill(master_pid, signal.SIGTERM)
    assert unshare.wait(20) == 0, log.read_text()
    assert "master 1 exiting" in log.read_text()
