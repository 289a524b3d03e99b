"""gunicorn config files run as they are: gunicorn's documented example and a production one.

Each is served by a real forkserve (``forkserve -c FILE APP``), which must answer, and
``--print-config`` must show what each gunicorn setting became. The files are in gunicorn_confs/.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from conftest import process_title, run_forkserve, wait_for

from forkserve.settings.resolve import resolve

CONFS = Path(__file__).resolve().parent / "gunicorn_confs"
EXAMPLE = CONFS / "example_config.py"
PRODUCTION = CONFS / "production.gunicorn.conf.py"


def get(server, path: str = "/", headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(server.url + path, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def printed(*args: str) -> dict[str, str]:
    """--print-config's lines as {setting: 'value  # source'}."""
    result = run_forkserve(*args, "--print-config")
    assert result.returncode == 0, result.stderr
    return {line.split(" = ")[0].strip(): line.split(" = ", 1)[1]
            for line in result.stdout.splitlines() if " = " in line and not line.startswith("#")}


# -- gunicorn's example config ---------------------------------------------------------------------


def test_gunicorns_example_config_resolves_to_the_same_settings():
    config = resolve(["-c", str(EXAMPLE)], {})
    assert (config.bind, config.backlog, config.workers, config.worker_class) == (
        ["127.0.0.1:8000"], 2048, 1, "sync")
    assert (config.worker_connections, config.timeout, config.keepalive) == (1000, 30.0, 2.0)
    assert config.raw_env == ["DJANGO_SECRET_KEY=something", "SPAM=eggs"]
    assert (config.daemon, config.pidfile, config.umask, config.user, config.group) == (False, None, 0, None, None)
    assert (config.errorlog, config.loglevel, config.accesslog) == ("-", "info", "-")
    for hook in ("post_fork", "pre_fork", "pre_exec", "when_ready", "worker_int", "worker_abort"):
        assert callable(config.hook(hook)), hook
    assert config.notes == [f"gunicorn setting 'spew' = False ({EXAMPLE} line 17) ignored: it is gunicorn's default"]
    assert [warning.split(" ignored")[0] for warning in config.warnings] == [
        f"gunicorn setting 'tmp_upload_dir' ({EXAMPLE} line 29)",
    ]
    assert callable(config.hook("ssl_context"))  # a setting now, used when certfile is set


def test_gunicorns_example_config_serves(start_server):
    server = start_server("-c", str(EXAMPLE), "gunicorn_conf_app:app")  # -b: a free port, not 8000
    seen = get(server)
    assert seen["env"]["SPAM"] == "eggs" and seen["env"]["DJANGO_SECRET_KEY"] == "something"
    assert server.wait_workers(1)
    wait_for(lambda: '"GET / HTTP/1.1" 200' in server.stdout(), message="the access log line on stdout")
    log = server.log()
    assert "gunicorn setting 'tmp_upload_dir'" in log
    assert "spew" not in log  # at its default: only --print-config mentions it


def test_print_config_shows_what_the_example_settings_became():
    lines = printed("-c", str(EXAMPLE))
    assert lines["worker_class"] == f"'sync'  # {EXAMPLE} line 11"
    assert lines["timeout"] == f"30.0  # {EXAMPLE} line 13"
    assert lines["raw_env"].startswith("['DJANGO_SECRET_KEY=something', 'SPAM=eggs']")
    assert lines["post_fork"] == f"post_fork  # {EXAMPLE} line 43"


def test_gunicorns_example_hooks_log_through_server_log(start_server):
    server = start_server("-c", str(EXAMPLE), "gunicorn_conf_app:app")
    server.wait_workers(1)
    # The formatted lines: a failing hook's traceback quotes the source line, not these.
    wait_for(lambda: re.search(r"Worker spawned \(pid: \d+\)", server.log()), timeout=3,
             message="post_fork's log line")
    assert re.search(r"\] Server is ready. Spawning workers$", server.log(), re.MULTILINE)


# -- a production gunicorn.conf.py -----------------------------------------------------------------


def test_production_gunicorn_conf_serves_with_its_settings_and_hooks(start_server, tmp_path):
    hooks = tmp_path / "hooks.log"
    server = start_server("-c", str(PRODUCTION), "gunicorn_conf_app:app",
                          env={"HOOK_LOG": str(hooks), "WEB_CONCURRENCY": "2"})
    workers = server.wait_workers(2)
    seen = get(server, "/orders", headers={"X-Forwarded-Proto": "https", "X-Request-ID": "req-7"})
    assert seen["env"]["APP_ENV"] == "production"
    assert seen["scheme"] == "https"  # secure_scheme_headers from a peer in forwarded_allow_ips
    assert seen["umask"] == 0o007
    assert "shop-web" in process_title(server.pid) and "shop-web" in process_title(workers[0])
    wait_for(lambda: "post_request /orders https" in hooks.read_text(), message="the post_request hook")
    marks = hooks.read_text().splitlines()
    assert marks[0] == "on_starting"
    assert f"when_ready {server.pid}" in marks
    assert sorted(line for line in marks if line.startswith("post_fork")) == sorted(
        f"post_fork {pid}" for pid in workers)
    assert "pre_request GET /orders" in marks
    access = wait_for(lambda: [line for line in server.stdout().splitlines() if "/orders" in line],
                      message="the access log line")
    assert access[0].startswith('127.0.0.1 "GET /orders HTTP/1.1" 200 ') and access[0].endswith(" req-7")
    server.stop()
    assert sum(line.startswith("worker_exit") for line in hooks.read_text().splitlines()) == 2


def test_print_config_shows_what_the_production_settings_became():
    lines = printed("-c", str(PRODUCTION), "demo.wsgi:application")
    at = {name: value.split("  # ")[0] for name, value in lines.items()}
    assert (at["worker_class"], at["threads"], at["worker_connections"]) == ("'gthread'", "4", "500")
    assert (at["timeout"], at["graceful_timeout"], at["keepalive"]) == ("60.0", "20.0", "75.0")
    assert (at["max_requests"], at["max_requests_jitter"]) == ("2000", "200")
    assert (at["limit_request_line"], at["limit_request_fields"], at["limit_request_field_size"]) == (
        "8190", "200", "16380")
    assert at["forwarded_allow_ips"] == "['10.0.0.0/8', '127.0.0.1']"
    assert at["worker_tmp_dir"] == "'/dev/shm'"
    assert (at["umask"], at["proc_name"], at["preload_app"]) == ("0o7", "'shop-web'", "True")
    assert lines["post_request"] == f"post_request  # {PRODUCTION} line 78"
