"""End to end: a real master and real workers serving the demo, Django, Flask and test apps."""

from __future__ import annotations

import hashlib
import os
import signal
import socket

import requests
from conftest import free_port, pid_alive, process_title, raw_exchange, run_forkserve, status_of, wait_for


def test_master_and_workers_are_titled_and_counted(start_server):
    server = start_server("-w", "3", "demo.wsgi:application")
    workers = server.wait_workers(3)
    wait_for(lambda: process_title(server.pid) == "forkserve: master [demo.wsgi:application] 3 workers",
             10, message="the master's title with the worker count")
    for pid in workers:
        assert process_title(pid).startswith("forkserve: worker [demo.wsgi:application]")


def test_term_stops_master_and_every_worker(start_server):
    server = start_server("-w", "2", "demo.wsgi:application")
    workers = server.wait_workers(2)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    wait_for(lambda: not any(pid_alive(pid) for pid in workers), 5, message="workers to exit")


def test_int_stops_everything_promptly(start_server):
    server = start_server("-w", "2", "demo.wsgi:application")
    workers = server.wait_workers(2)
    server.signal(signal.SIGINT)
    assert server.wait_exit(10) == 0
    wait_for(lambda: not any(pid_alive(pid) for pid in workers), 5, message="workers to exit")


def test_dead_worker_is_replaced(start_server):
    server = start_server("-w", "2", "demo.wsgi:application")
    first = server.wait_workers(2)
    os.kill(first[0], signal.SIGKILL)
    wait_for(lambda: len(set(server.workers()) - set(first)) == 1 and len(server.workers()) == 2, 10,
             message="a replacement worker")
    assert "was killed by SIGKILL" in server.log()
    assert requests.get(server.url + "/hello", timeout=5).text == "Hello, world!"


def test_demo_routes(start_server):
    server = start_server("-w", "2", "demo.wsgi:application")
    base = server.url
    index = requests.get(base + "/", timeout=5)
    assert index.status_code == 200 and "text/html" in index.headers["Content-Type"]
    assert "/json" in index.text

    data = requests.get(base + "/json?a=1&b=2", timeout=5).json()
    assert data["method"] == "GET" and data["path"] == "/json" and data["query"] == {"a": "1", "b": "2"}
    assert data["remote_addr"] == "127.0.0.1"

    echo = requests.post(base + "/echo", data={"name": "Zoë", "n": "1"}, timeout=5).json()
    assert echo["fields"] == {"name": "Zoë", "n": "1"}

    payload = os.urandom(300_000)
    upload = requests.post(base + "/upload", files={"file": ("blob.bin", payload)}, timeout=10).json()
    assert upload == {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "filename": "blob.bin"}

    stream = requests.get(base + "/stream?chunks=4", timeout=5)
    assert stream.text == "".join(f"chunk {i}\n" for i in range(4))
    assert stream.headers.get("Transfer-Encoding") == "chunked"

    download = requests.get(base + "/download?size=2000000", timeout=10)
    assert len(download.content) == 2_000_000
    assert hashlib.sha256(download.content).hexdigest() == download.headers["X-Content-SHA256"]

    cookies = requests.get(base + "/cookies", timeout=5)
    assert {"demo_session", "demo_theme"} <= set(cookies.cookies.keys())

    missing = requests.get(base + "/no/such/page", timeout=5)
    assert missing.status_code == 404 and missing.reason == "Not Found"

    error = requests.get(base + "/error", timeout=5)
    assert error.status_code == 500


def test_head_request_has_no_body(start_server):
    server = start_server("demo.wsgi:application", "-w", "1")
    reply = raw_exchange(server, b"HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert status_of(reply) == 200 and body == b""
    assert b"Content-Length: 13" in head


def test_app_exception_gives_500_and_worker_keeps_serving(start_server):
    server = start_server("simple_apps:crash_before_headers", "-w", "1")
    (worker,) = server.wait_workers(1)
    for _ in range(3):
        reply = requests.get(server.url + "/boom", timeout=5)
        assert reply.status_code == 500 and reply.reason == "Internal Server Error"
        assert requests.get(server.url + "/fine", timeout=5).text == "Hello, world!"
    assert server.workers() == [worker]
    log = server.log()
    assert "ValueError: boom before headers" in log and "GET /boom" in log


def test_demo_crash_view_propagates_to_server_500(start_server):
    server = start_server("demo.wsgi:application", "-w", "1")
    assert requests.get(server.url + "/crash", timeout=5).status_code == 500
    assert requests.get(server.url + "/hello", timeout=5).status_code == 200


def test_validator_wrapped_app_get_post_head(start_server):
    server = start_server("simple_apps:validated", "-w", "1")
    got = requests.get(server.url + "/a%20b?x=1", timeout=5).json()
    assert got["path"] == "/a b" and got["query"] == "x=1"
    posted = requests.post(server.url + "/p", data=b"x" * 5000, timeout=5).json()
    assert posted["body_length"] == 5000
    assert requests.head(server.url + "/h", timeout=5).status_code == 200
    assert "AssertionError" not in server.log() and "WSGIWarning" not in server.log()


def test_factory_call_form(start_server):
    server = start_server("simple_apps:factory()", "-w", "1")
    assert requests.get(server.url, timeout=5).text == "Hello, world!"


def test_unix_socket_bind_serves_and_is_removed(start_server, tmp_path):
    path = str(tmp_path / "fs.sock")
    server = start_server("-b", f"unix:{path}", "-w", "1", "--umask", "077", "demo.wsgi:application",
                          address=path)
    assert oct(os.stat(path).st_mode & 0o777) == "0o700"
    reply = raw_exchange(server, b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 200 and b'"remote_addr": ""' in reply
    server.signal(signal.SIGTERM)
    server.wait_exit()
    assert not os.path.exists(path)


def test_stale_unix_socket_is_replaced(start_server, tmp_path):
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays; nobody listens
    server = start_server("-b", f"unix:{path}", "-w", "1", "demo.wsgi:application", address=path)
    assert server.answers()


def test_several_binds(start_server, tmp_path):
    port = free_port()
    path = str(tmp_path / "both.sock")
    server = start_server("-b", f"127.0.0.1:{port}", "-b", f"unix:{path}", "-w", "1", "demo.wsgi:application",
                          address=("127.0.0.1", port))
    assert requests.get(server.url + "/hello", timeout=5).status_code == 200
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 OK")


def test_ipv6_loopback(start_server):
    port = free_port()
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", port))
    except OSError:
        port = free_port()
    server = start_server("-b", f"[::1]:{port}", "-w", "1", "demo.wsgi:application", address=("::1", port))
    reply = raw_exchange(server, b"GET /json HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 200 and b'"remote_addr": "::1"' in reply


def test_address_in_use_is_one_line_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_forkserve("-b", f"127.0.0.1:{port}", "demo.wsgi:application")
    assert result.returncode != 0
    assert f"cannot bind 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_module_stops_master_without_respawn_loop():
    result = run_forkserve("-w", "3", "no_such_module:app")
    assert result.returncode == 3
    assert "no module named 'no_such_module'" in result.stderr
    assert result.stderr.count("no module named") == 1
    assert "Traceback" not in result.stderr


def test_missing_attribute_is_named():
    result = run_forkserve("-w", "2", "simple_apps:nope")
    assert result.returncode == 3
    assert "module 'simple_apps' has no attribute 'nope'" in result.stderr


def test_not_callable_is_named():
    result = run_forkserve("-w", "1", "simple_apps:not_callable")
    assert result.returncode == 3 and "is not callable" in result.stderr


def test_import_error_in_user_code_shows_their_traceback_once():
    result = run_forkserve("-w", "3", "broken_at_import:app")
    assert result.returncode == 3
    assert "the app's own import-time bug" in result.stderr
    assert 'broken_at_import.py", line 4, in helper' in result.stderr
    assert result.stderr.count("RuntimeError: the app's own import-time bug") == 1
    assert "importlib" not in result.stderr


def test_preload_failure_exits_before_forking():
    result = run_forkserve("--preload", "broken_at_import:app")
    assert result.returncode == 3 and "the app's own import-time bug" in result.stderr
    assert "booting worker" not in result.stderr


def test_flask_app_end_to_end(start_server):
    server = start_server("flask_app:app", "-w", "2")
    assert requests.get(server.url + "/", timeout=5).text == "flask says hi"
    data = requests.post(server.url + "/json?q=1", data={"k": "v"}, timeout=5).json()
    assert data["method"] == "POST" and data["args"] == {"q": "1"} and data["form"] == {"k": "v"}
    assert data["remote_addr"] == "127.0.0.1" and data["scheme"] == "http"


def test_django_project_end_to_end(start_server):
    server = start_server("djangoproject.wsgi:application", "-w", "2")
    assert requests.get(server.url + "/", timeout=5).text == "django says hi"
    data = requests.post(server.url + "/echo?x=1", data={"a": "b"}, timeout=5).json()
    assert data["get"] == {"x": "1"} and data["post"] == {"a": "b"} and data["method"] == "POST"
    assert requests.get(server.url + "/stream", timeout=5).text == "".join(f"line {i}\n" for i in range(5))


def test_python_dash_m_and_console_script_agree():
    result = run_forkserve("--version")
    assert result.returncode == 0 and result.stdout.startswith("forkserve ")
