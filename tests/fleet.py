"""Several forkserve hosts on one machine, behind a real HAProxy and a real nginx.

Each host is a Linux network namespace with its own address on a bridge this module creates
(a veth pair per host; a private 10.213.N.0/24 picked so that no address on the machine is in
it), running forkserve started as a user would: ``forkserve -c conf/forkserve.fleet.conf.py
--daemon``, through ``ip netns exec``. HAProxy runs from conf/haproxy.cfg and nginx from
conf/nginx.conf (its forkserve_hosts upstream), both in the machine's own namespace on loopback,
so that every packet of the test goes to loopback or to the test's own namespaces.

tests/test_multihost.py runs the short version in the default suite; ``python -m
benchmarks.multihost`` the long one. Everything created is named ``fsv-<random>`` /
``fsv<random>...`` and removed by ``Fleet.destroy`` — processes (every pid in each namespace,
then each recorded pid), namespaces, bridge — whatever state a failure left.

Run as a script, it is the restart command conf/rolling_upgrade.py is given in the test:
``python tests/fleet.py restart STATE_DIR HOST_ADDRESS`` does what ``systemctl restart`` does for
one host (TERM, wait for the master to exit, start again, return once the workers serve).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import hashlib
import io
import itertools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import requests
from conftest import free_port, pid_alive, wait_for
from nginx import Nginx, RequestLoop, stop_process_group

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLEET_CONF = ROOT / "conf" / "forkserve.fleet.conf.py"
HAPROXY_CONF = ROOT / "conf" / "haproxy.cfg"
ROLLING_UPGRADE = ROOT / "conf" / "rolling_upgrade.py"
SUBNET = "10.213"  # 10.213.N.0/24, N chosen free; the bridge is .1, host i is .10+i
APP_PORT = 8000    # the fleet config's bind and stats_bind ports (checked by the test)
STATS_PORT = 9191
STOP_TIMEOUT = 60.0


class FleetError(RuntimeError):
    """Something the fleet needs did not happen in time; the message says what."""


def run(*command: str, timeout: float = 15.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a setup command (ip, haproxy -c); FleetError with its output when it fails."""
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and completed.returncode != 0:
        raise FleetError(f"{' '.join(command)} exited with {completed.returncode}: {completed.stderr.strip()}")
    return completed


def poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """``condition()``'s first truthy value; AssertionError naming ``what`` after ``timeout``."""
    return wait_for(condition, timeout, interval, message=what)


def host_stats(address: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """A host's /stats document, or None when its stats endpoint does not answer."""
    try:
        with urllib.request.urlopen(f"http://{address}:{STATS_PORT}/stats", timeout=timeout) as reply:
            return json.load(reply)
    except (OSError, ValueError):
        return None


# -- one host: a namespace running forkserve ------------------------------------------------------


@dataclasses.dataclass
class Host:
    """One forkserve host: its namespace, address, root-side veth, and state directory."""

    name: str
    netns: str
    veth: str
    address: str
    state: Path

    @property
    def pidfile(self) -> Path:
        return self.state / "forkserve.pid"

    @property
    def error_log(self) -> Path:
        return self.state / "error.log"

    def master_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def recorded_pids(self) -> list[int]:
        """Every master pid this host ever had (for teardown)."""
        try:
            return [int(line) for line in (self.state / "masters").read_text().split()]
        except OSError:
            return []

    def save_command(self, overrides: list[str], env: dict[str, str]) -> None:
        (self.state / "command.json").write_text(json.dumps({"overrides": overrides, "env": env}))

    def start(self) -> int:
        """Start forkserve from the fleet config as a daemon in the namespace; its master pid once
        the workers serve (forkserve --daemon returns then)."""
        saved = json.loads((self.state / "command.json").read_text())
        env = {key: value for key, value in os.environ.items()
               if key not in ("FORKSERVE_CMD_ARGS", "WEB_CONCURRENCY", "PORT")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        env.update(saved["env"])
        command = ["ip", "netns", "exec", self.netns, sys.executable, "-m", "forkserve",
                   "-c", str(FLEET_CONF), *saved["overrides"], "--daemon", "--pid", str(self.pidfile),
                   "--error-logfile", str(self.error_log), "--access-logfile", str(self.state / "access.log")]
        completed = subprocess.run(command, cwd=str(ROOT), env=env, capture_output=True, text=True,
                                   timeout=90, check=False)
        pid = self.master_pid()
        if pid is not None:
            with open(self.state / "masters", "a") as record:
                record.write(f"{pid}\n")
        if completed.returncode != 0 or pid is None:
            raise FleetError(f"{self.name}: forkserve did not start ({completed.returncode}): "
                             f"{completed.stderr.strip()}\n{self.log_tail()}")
        return pid

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """TERM the master and wait until it has exited (shutdown_delay and the drain included)."""
        pid = self.master_pid()
        if pid is None or not pid_alive(pid):
            return
        os.kill(pid, signal.SIGTERM)
        poll(lambda: not pid_alive(pid), timeout, f"{self.name}'s master {pid} to exit after TERM", 0.05)

    def restart(self) -> int:
        """What `systemctl restart` does: stop, then start; the new master's pid."""
        self.stop()
        return self.start()

    def stats(self) -> dict[str, Any] | None:
        return host_stats(self.address)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def host_from_state(state_dir: Path, address: str) -> Host:
    """The Host whose address is ``address``, from the fleet's state directory (script use)."""
    described = json.loads((state_dir / "hosts.json").read_text())
    for item in described:
        if item["address"] == address:
            return Host(item["name"], item["netns"], item["veth"], item["address"], Path(item["state"]))
    raise FleetError(f"no host {address} in {state_dir}")


# -- the network and the hosts ----------------------------------------------------------------------


def used_subnets() -> set[int]:
    """Third octets of 10.213.N.x addresses or routes already on this machine."""
    text = run("ip", "-4", "addr", "show").stdout + run("ip", "-4", "route", "show", "table", "all").stdout
    return {int(octet) for octet in re.findall(rf"\b{re.escape(SUBNET)}\.(\d+)\.", text)}


class Fleet:
    """A bridge, ``count`` namespaces with forkserve, and everything needed to take it down."""

    def __init__(self, state: Path, count: int = 3) -> None:
        self.state = state
        self.tag = secrets.token_hex(3)
        free = sorted(set(range(1, 255)) - used_subnets())
        if not free:
            raise FleetError(f"no free {SUBNET}.N.0/24 subnet on this machine")
        self.subnet = f"{SUBNET}.{secrets.choice(free)}"
        self.gateway = f"{self.subnet}.1"
        self.bridge = f"fsv{self.tag}br"
        self.hosts = [
            Host(f"host{index}", f"fsv-{self.tag}-h{index}", f"fsv{self.tag}h{index}",
                 f"{self.subnet}.{10 + index}", state / f"host{index}")
            for index in range(1, count + 1)
        ]
        self.created: list[str] = []

    def create(self) -> Self:
        """The bridge (with the gateway address the front ends connect from) and each host's
        namespace, joined by a veth pair whose namespace end is eth0."""
        run("ip", "link", "add", self.bridge, "type", "bridge")
        self.created.append(self.bridge)
        run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for host in self.hosts:
            host.state.mkdir(parents=True, exist_ok=True)
            run("ip", "netns", "add", host.netns)
            self.created.append(host.netns)
            run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
            run("ip", "link", "set", host.veth, "master", self.bridge, "up")
            run("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            run("ip", "-n", host.netns, "link", "set", "eth0", "up")
            run("ip", "-n", host.netns, "link", "set", "lo", "up")
        (self.state / "hosts.json").write_text(json.dumps(
            [{"name": h.name, "netns": h.netns, "veth": h.veth, "address": h.address, "state": str(h.state)}
             for h in self.hosts]))
        return self

    def start(self, overrides: list[str]) -> None:
        """forkserve on every host, from the fleet config plus ``overrides``, started together."""
        env = {"FORWARDED_ALLOW_IPS": self.gateway}
        for host in self.hosts:
            host.save_command(overrides, env)
        errors: list[BaseException] = []

        def start(host: Host) -> None:
            try:
                host.start()
            except BaseException as error:  # noqa: BLE001 - reported below, with the others
                errors.append(error)

        threads = [threading.Thread(target=start, args=(host,)) for host in self.hosts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        if errors:
            raise errors[0]

    def cut(self, host: Host) -> None:
        """The host's link goes down: its packets are lost, nothing is refused or reset."""
        run("ip", "link", "set", host.veth, "down")

    def restore(self, host: Host) -> None:
        run("ip", "link", "set", host.veth, "up")

    def destroy(self) -> None:
        """Kill every process in each namespace and each master ever recorded, delete the
        namespaces (their veth pairs go with them) and the bridge. Never raises."""
        for host in self.hosts:
            if host.netns not in self.created:
                continue
            pids = run("ip", "netns", "pids", host.netns, check=False).stdout.split()
            for pid in [*map(int, pids), *host.recorded_pids()]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for host in self.hosts:
            if host.netns in self.created:
                with contextlib.suppress(AssertionError, FleetError, subprocess.TimeoutExpired):
                    poll(lambda host=host: not run("ip", "netns", "pids", host.netns, check=False).stdout.strip(),
                         10, f"the processes in {host.netns} to die")
                # The namespace goes away lazily, and its veth pair with it: delete our end now.
                run("ip", "link", "del", host.veth, check=False)
                run("ip", "netns", "del", host.netns, check=False)
        if self.bridge in self.created:
            run("ip", "link", "del", self.bridge, check=False)
        self.created.clear()

    def leftovers(self) -> list[str]:
        """Namespaces and links of this fleet still present (empty after destroy)."""
        names = run("ip", "netns", "list").stdout + run("ip", "-o", "link", "show").stdout
        return [name for name in (self.bridge, *(h.netns for h in self.hosts), *(h.veth for h in self.hosts))
                if re.search(rf"\b{re.escape(name)}\b", names)]


# -- HAProxy --------------------------------------------------------------------------------------

HAPROXY_LINE = re.compile(
    r'^\S+ \[(?P<accept>[^\]]+)\] \S+ (?P<backend>[^/\s]+)/(?P<server>\S+) (?P<timers>\S+) '
    r'(?P<status>-?\d+) \S+ \S+ \S+ (?P<term>\S+) (?P<conns>\S+) \S+ "(?P<request>[^"]*)"')


@dataclasses.dataclass(frozen=True)
class Routed:
    """One request as a front end logged it: when it began (epoch s), the hosts it was sent to
    (in order), and the status the client got."""

    start: float
    hosts: tuple[str, ...]
    status: int
    end: float = 0.0
    detail: str = ""  # HAProxy's termination state, nginx's upstream statuses


class HAProxy:
    """haproxy -db (foreground) from conf/haproxy.cfg, stopped by pid and process group."""

    def __init__(self, workdir: Path, fleet: Fleet, check_inter: str, port: int, stats_port: int) -> None:
        from conf_template import render

        self.workdir = workdir
        self.fleet = fleet
        self.port = port
        self.stats_port = stats_port
        self.check_inter = check_inter
        self.log_path = workdir / "haproxy.log"
        self.conf_path = workdir / "haproxy.cfg"
        self.names = {f"host{index}": host.address for index, host in enumerate(fleet.hosts, 1)}
        self.conf_path.write_text(render(HAPROXY_CONF, {
            "LISTEN": f"127.0.0.1:{port}",
            "STATS_LISTEN": f"127.0.0.1:{stats_port}",
            **{f"HOST_{index}": f"{host.address}:{APP_PORT}" for index, host in enumerate(fleet.hosts, 1)},
            "READYZ_PORT": str(STATS_PORT),
            "CHECK_INTER": check_inter,
        }))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, binary: str, timeout: float = 20.0) -> Self:
        run(binary, "-c", "-f", str(self.conf_path))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([binary, "-db", "-f", str(self.conf_path)], stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        poll(lambda: self._running() and set(self.states().values()) == {"UP"}, timeout,
             f"HAProxy to see every host UP:\n{self.log_tail()}")
        return self

    def _running(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise FleetError(f"haproxy exited with {self.process.returncode}:\n{self.log_tail()}")
        return True

    def states(self) -> dict[str, str]:
        """Each host's state as HAProxy sees it (UP, DOWN, 'UP 1/2' going down, ...), by address."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=1) as reply:
                text = reply.read().decode()
        except OSError:
            return {}
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {self.names[row["svname"]]: row["status"] for row in rows if row["svname"] in self.names}

    def routed(self) -> list[Routed]:
        """Every request HAProxy logged (its final host; retries are counted, not listed)."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = HAPROXY_LINE.match(line)
            if match is None or match["request"].startswith("GET /stats"):
                continue
            start = datetime.datetime.strptime(match["accept"], "%d/%b/%Y:%H:%M:%S.%f").timestamp()
            server = self.names.get(match["server"], match["server"])
            found.append(Routed(start, (server,), int(match["status"]), detail=match["term"]))
        return found

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        stop_process_group(self.process, signal.SIGTERM)


class StateWatch:
    """HAProxy's view of the hosts, polled every 20 ms in a thread: when each host went DOWN
    and came back UP (epoch seconds), for the "stopped sending within" figures."""

    def __init__(self, haproxy: HAProxy) -> None:
        self.haproxy = haproxy
        self.transitions: list[tuple[float, str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        last: dict[str, str] = {}
        deadline = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < deadline:
            for address, status in self.haproxy.states().items():
                settled = status if status in ("UP", "DOWN") else ""  # not 'UP 1/2' (going down)
                if settled and last.get(address) != settled:
                    last[address] = settled
                    self.transitions.append((time.time(), address, settled))
            time.sleep(0.02)

    def first(self, address: str, state: str, after: float) -> float | None:
        """When ``address`` was first seen in ``state`` after ``after`` (epoch s), or None."""
        return next((when for when, host, seen in self.transitions
                     if host == address and seen == state and when >= after), None)


# -- nginx -------------------------------------------------------------------------------------------

NGINX_LINE = re.compile(r'"(?P<request>[^"]*)" (?P<status>\d{3}) .* upstream="(?P<upstream>[^"]*)" '
                        r'upstream_status="(?P<upstream_status>[^"]*)" request_time=(?P<time>[\d.]+) '
                        r'msec=(?P<msec>[\d.]+)$')


def nginx_routed(access_log: str) -> list[Routed]:
    """Every request nginx logged, with every host it was sent to (the next upstreams too)."""
    found = []
    for line in access_log.splitlines():
        match = NGINX_LINE.search(line)
        if match is None or "/static/" in match["request"]:
            continue
        hosts = tuple(part.strip().rsplit(":", 1)[0] for part in re.split(r"[,:] ", match["upstream"])
                      if part.strip() and part.strip() != "-")
        end = float(match["msec"])
        found.append(Routed(end - float(match["time"]), hosts, int(match["status"]), end, match["upstream_status"]))
    return found


# -- the client ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """One client request: when it began and ended (epoch s), and "ok" or what went wrong."""

    start: float
    end: float
    result: str


class Load(RequestLoop):
    """Steady client load on a front end: ``threads`` threads, each with a keep-alive session,
    alternating GET /json and POST /upload (a ``body_size`` body whose size and SHA-256 the app
    echoes back and the client checks), each outcome kept with its times. Bounded like every
    RequestLoop: the threads stop by themselves after ``max_seconds`` or ``max_requests``."""

    def __init__(self, url: str, threads: int = 2, body_size: int = 4096, max_seconds: float = 120.0,
                 max_requests: int = 200_000, timeout: float = 15.0) -> None:
        super().__init__(url, threads, max_seconds=max_seconds, max_requests=max_requests)
        self.body_size = body_size
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self._numbers = itertools.count()

    def sent(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` more requests than now have completed."""
        target = self.sent() + count
        poll(lambda: self.sent() >= target, timeout, f"{count} requests through {self.url}")

    def _request(self, session: requests.Session, number: int, body: bytes, digest: str) -> str:
        if number % 2:
            reply = session.post(f"{self.url}/upload", data=body, timeout=self.timeout,
                                 headers={"Content-Type": "application/octet-stream"})
            if reply.status_code != 200:
                return str(reply.status_code)
            answer = reply.json()
            return "ok" if (answer["size"], answer["sha256"]) == (len(body), digest) else "wrong body"
        reply = session.get(f"{self.url}/json", timeout=self.timeout)
        if reply.status_code != 200:
            return str(reply.status_code)
        return "ok" if reply.json()["message"] == "hello" else "wrong body"

    def _run(self) -> None:
        body = secrets.token_bytes(self.body_size)
        digest = hashlib.sha256(body).hexdigest()
        deadline = time.monotonic() + self.max_seconds
        number = next(self._numbers)  # odd threads start with a POST, even ones with a GET
        with requests.Session() as session:
            session.trust_env = False
            while not self._stop.is_set() and time.monotonic() < deadline:
                start = time.time()
                try:
                    result = self._request(session, number, body, digest)
                except (requests.RequestException, ValueError, KeyError) as error:
                    result = type(error).__name__
                with self._lock:
                    self.outcomes.append(Outcome(start, time.time(), result))
                    if len(self.outcomes) >= self.max_requests:
                        self._stop.set()
                number += 1


@dataclasses.dataclass
class Tally:
    """What the client saw during one scenario."""

    sent: int
    ok: int
    failures: Counter[str]

    @property
    def failed(self) -> int:
        return self.sent - self.ok

    @classmethod
    def of(cls, outcomes: list[Outcome]) -> Tally:
        failures = Counter(item.result for item in outcomes if item.result != "ok")
        return cls(len(outcomes), sum(1 for item in outcomes if item.result == "ok"), failures)


# -- the scenarios: the test asserts on them, benchmarks.multihost runs them longer ------------------

CHECK_INTER = 0.2  # HAProxy's inter in the fleet's haproxy.cfg (1s in production)


@dataclasses.dataclass
class Site:
    """Three hosts and their two front ends, each front end with its own client load."""

    fleet: Fleet
    haproxy: HAProxy
    nginx: Nginx

    def nginx_routed(self) -> list[Routed]:
        return nginx_routed(self.nginx.access_log())


@contextlib.contextmanager
def running_site(state: Path, nginx_prefix: Path, tls: Any, haproxy_binary: str, shutdown_delay: float,
                 workers: int = 1) -> Iterator[Site]:
    """The fleet with forkserve on every host (``workers`` each), HAProxy and nginx in front;
    all of it stopped and removed on the way out, whatever happened. FleetError if anything of
    it is left behind."""
    fleet = Fleet(state)
    haproxy = nginx = None
    try:
        fleet.create()
        fleet.start(["-w", str(workers), "--shutdown-delay", str(shutdown_delay)])
        haproxy = HAProxy(state, fleet, f"{int(CHECK_INTER * 1000)}ms", free_port(), free_port())
        haproxy.start(haproxy_binary)
        nginx = Nginx(nginx_prefix, [(host.address, APP_PORT) for host in fleet.hosts], tls).start()
        yield Site(fleet, haproxy, nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        if haproxy is not None:
            haproxy.stop()
        fleet.destroy()
    if fleet.leftovers():
        raise FleetError(f"left behind: {fleet.leftovers()}")


class Traffic:
    """One scenario's client load on both front ends (``threads`` each) and HAProxy's state
    watch; ``settle(n)`` waits until both loads completed ``n`` more requests."""

    def __init__(self, site: Site, threads: int, max_seconds: float = 120.0) -> None:
        self.site = site
        self.began = time.time()
        self.watch = StateWatch(site.haproxy)
        self.loads = {"HAProxy": Load(site.haproxy.url, threads, max_seconds=max_seconds),
                      "nginx": Load(site.nginx.url, threads, max_seconds=max_seconds)}

    def __enter__(self) -> Self:
        self.watch.__enter__()
        for load in self.loads.values():
            load.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for load in self.loads.values():
            load.stop()
        self.watch.__exit__()

    def settle(self, count: int) -> None:
        for load in self.loads.values():
            load.wait_for(count, timeout=60)

    def outcomes(self) -> dict[str, list[Outcome]]:
        return {name: list(load.outcomes) for name, load in self.loads.items()}

    def routed(self) -> dict[str, list[Routed]]:
        """Each front end's log of this scenario's requests."""
        return {"HAProxy": [r for r in self.site.haproxy.routed() if r.start >= self.began],
                "nginx": [r for r in self.site.nginx_routed() if r.start >= self.began]}


@dataclasses.dataclass
class Scenario:
    """What one scenario measured. Times are epoch seconds; ``in_flight_until`` is when the
    host stopped being able to answer (a failure must have been sent to it before then)."""

    name: str
    victim: Host | None
    event: float
    outcomes: dict[str, list[Outcome]]
    routed: dict[str, list[Routed]]
    transitions: list[tuple[float, str, str]]
    haproxy_down: float | None = None
    haproxy_back: float | None = None
    nginx_out: float | None = None
    in_flight_until: float = 0.0
    took: float = 0.0
    output: str = ""

    @property
    def tallies(self) -> dict[str, Tally]:
        return {front_end: Tally.of(outcomes) for front_end, outcomes in self.outcomes.items()}

    def first(self, address: str, state: str, after: float) -> float | None:
        return next((when for when, host, seen in self.transitions
                     if host == address and seen == state and when >= after), None)

    def out_of_rotation(self) -> list[float]:
        """Seconds each host was DOWN in HAProxy after the event (a rolling upgrade)."""
        spans = []
        for address in sorted({host for _, host, _ in self.transitions}):
            down = self.first(address, "DOWN", self.event)
            up = down and self.first(address, "UP", down)
            if down and up:
                spans.append(up - down)
        return spans

    def notes(self) -> dict[str, str]:
        """How fast each front end stopped sending to the host, in words, per front end."""
        if self.victim is None:
            spans = self.out_of_rotation() or [0.0]
            return {"HAProxy": f"each host out of rotation {min(spans):.1f}-{max(spans):.1f}s",
                    "nginx": f"the upgrade of the hosts took {self.took:.1f}s"}
        what = "kill" if self.name == "master SIGKILL" else "cut"
        nginx_cause = "failed request" if what == "kill" else "connect timeout (1 s)"
        after = (f"its last orphaned worker gone at {self.in_flight_until - self.event:.2f}s" if what == "kill"
                 else f"link restored after {self.took:.1f}s")
        return {"HAProxy": f"host DOWN {self.haproxy_down - self.event:.2f}s after the {what}",
                "nginx": f"host out at its first {nginx_cause}, {self.nginx_out - self.event:.2f}s after the "
                         f"{what} ({after})"}

    def failed_in_front(self, front_end: str) -> list[Routed]:
        """The requests the front end logged as failed: an error status, or none at all (-1:
        it closed the client's connection without an answer)."""
        return [item for item in self.routed[front_end] if item.status >= 500 or item.status < 0]

    def untraced_failures(self, front_end: str) -> list[str]:
        """Why this front end's failures are not all "in flight on the victim"; empty when:
        - at the client, every failed request was under way when the host went (begun before
          it stopped answering, ended after the event);
        - in the front end's log, every failure it logged was sent to the victim before then,
          and it logged no more failures than the client saw. (It may log fewer: HAProxy closes
          the client's connection without an answer, and logs nothing, when the server
          connection it reused for the request dies under it — so that a browser retries.)"""
        client = [item for item in self.outcomes[front_end] if item.result != "ok"]
        logged = self.failed_in_front(front_end)
        problems = [f"not under way when the host went: {item}" for item in client
                    if not self.event <= item.end or item.start > self.in_flight_until]
        if len(logged) > len(client):
            problems.append(f"{front_end} logged {len(logged)} failures, the client saw {len(client)}: {logged}")
        problems += [f"not sent to the victim while it answered: {item}" for item in logged
                     if self.victim is None or item.hosts[-1:] != (self.victim.address,)
                     or item.start > self.in_flight_until]
        return problems

    def lines(self) -> list[str]:
        """One line per front end: sent, ok, failed (by cause) and the notes."""
        notes = self.notes()
        return [f"{self.name:16} {front_end:8} sent {tally.sent:5}  ok {tally.ok:5}  failed {tally.failed:3} "
                f"{dict(tally.failures) or ''}  {notes[front_end]}" for front_end, tally in self.tallies.items()]


def served(host: Host) -> int:
    """Requests the host's current master has served (0 while it does not answer)."""
    stats = host.stats()
    return stats["totals"]["requests"] if stats else 0


def back_in_rotation(traffic: Traffic, host: Host, since: float, baseline: int) -> float:
    """Until HAProxy has the host UP again and it serves requests; when HAProxy saw it UP."""
    up = poll(lambda: traffic.watch.first(host.address, "UP", since), 15, f"HAProxy to mark {host.name} UP")
    poll(lambda: served(host) > baseline, 15, f"{host.name} to serve requests again")
    return up


def nginx_moved_on(site: Site, host: Host, after: float) -> Routed | None:
    """The first request begun after ``after`` that failed on ``host`` in nginx's log: moved on
    to another host, or answered 502 there (a POST already sent is not moved). Either marks the
    host failed (max_fails=1): nginx stops sending to it for fail_timeout."""
    return next((item for item in site.nginx_routed() if item.start >= after and (
        host.address in item.hosts[:-1] or (item.hosts[-1:] == (host.address,) and item.status >= 500))), None)


def gone(host: Host) -> bool:
    """No process left in the host's namespace (master and workers)."""
    return not run("ip", "netns", "pids", host.netns, check=False).stdout.strip()


def scenario_rolling_upgrade(site: Site, threads: int, settle: int) -> Scenario:
    """conf/rolling_upgrade.py over all the hosts, under load."""
    with Traffic(site, threads) as traffic:
        traffic.settle(settle)
        began = time.time()
        upgrade = rolling_upgrade(site.fleet)
        took = time.time() - began
        traffic.settle(settle)
    return Scenario("rolling upgrade", None, began, traffic.outcomes(), traffic.routed(),
                    list(traffic.watch.transitions), took=took,
                    output=upgrade.stdout + upgrade.stderr + f"\nexit {upgrade.returncode}")


def scenario_kill_master(site: Site, victim: Host, threads: int, settle: int) -> Scenario:
    """SIGKILL the victim's master under load; its orphaned worker exits on its own; then the
    host is started again and comes back into rotation."""
    with Traffic(site, threads) as traffic:
        traffic.settle(settle)
        killed = time.time()
        os.kill(victim.master_pid(), signal.SIGKILL)
        down = poll(lambda: traffic.watch.first(victim.address, "DOWN", killed), 10, "HAProxy to mark the host DOWN")
        poll(lambda: gone(victim), 10, "the orphaned worker to exit")
        died = time.time()
        moved = poll(lambda: nginx_moved_on(site, victim, killed), 10, "nginx to move a request on")
        traffic.settle(settle)
        restarted = time.time()
        victim.start()
        back = back_in_rotation(traffic, victim, restarted, 0)
        traffic.settle(settle)
    return Scenario("master SIGKILL", victim, killed, traffic.outcomes(), traffic.routed(),
                    list(traffic.watch.transitions), down, back, moved.end, died, died - killed)


def scenario_cut_link(site: Site, victim: Host, threads: int, settle: int, hold: float = 0.0) -> Scenario:
    """Take the victim's link down under load until both front ends have taken it out (and
    ``hold`` seconds more), then bring it back; requests in flight over it complete once TCP
    retransmits them."""
    with Traffic(site, threads) as traffic:
        traffic.settle(settle)
        cut = time.time()
        try:
            site.fleet.cut(victim)
            down = poll(lambda: traffic.watch.first(victim.address, "DOWN", cut), 10, "HAProxy to mark the host DOWN")
            moved = poll(lambda: nginx_moved_on(site, victim, cut), 10, "nginx to time out and move on")
            if hold:
                time.sleep(hold)  # the benchmark's longer outage; the test passes 0
        finally:
            site.fleet.restore(victim)
        restored = time.time()
        back = back_in_rotation(traffic, victim, restored, served(victim))
        traffic.settle(settle)
    return Scenario("link cut", victim, cut, traffic.outcomes(), traffic.routed(), list(traffic.watch.transitions),
                    down, back, moved.end, cut, restored - cut)


# -- the rolling upgrade, through the shipped script ------------------------------------------------


def rolling_upgrade(fleet: Fleet, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """conf/rolling_upgrade.py over every host, each restarted by this file as a script."""
    restart = f"{sys.executable} {Path(__file__).resolve()} restart {fleet.state} {{host}}"
    return subprocess.run(
        [sys.executable, str(ROLLING_UPGRADE), "--restart", restart, "--stats-port", str(STATS_PORT),
         "--timeout", str(timeout), *(host.address for host in fleet.hosts)],
        capture_output=True, text=True, timeout=timeout * 4 * len(fleet.hosts), check=False,
    )


def main(argv: list[str]) -> int:
    """``restart STATE_DIR ADDRESS``: restart one host (see the module docstring)."""
    if len(argv) != 3 or argv[0] != "restart":
        print("usage: fleet.py restart STATE_DIR HOST_ADDRESS", file=sys.stderr)
        return 2
    host = host_from_state(Path(argv[1]), argv[2])
    pid = host.restart()
    print(f"{host.name} restarted: master {pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
