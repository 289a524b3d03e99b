"""The error log and the access log: formats, atoms, escaping, JSON, reopen on USR1, capture_output."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
from pathlib import Path

import pytest
import requests
from conftest import run_forkserve, wait_for

from forkserve.http.accesslog import JsonFormat, LineFormat, compile_format, escape
from forkserve.http.response import Response
from forkserve.settings.registry import DEFAULT_ACCESS_LOG_FORMAT

ERROR_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] ")
COMMON_LINE = re.compile(
    r'^(?P<h>\S+) - (?P<u>\S+) \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "(?P<r>(?:[^"\\]|\\.)*)" '
    r'(?P<s>\d{3}|-) (?P<b>\d+) "(?P<f>(?:[^"\\]|\\.)*)" "(?P<a>(?:[^"\\]|\\.)*)"$'
)


def _environ(**extra: str) -> dict[str, object]:
    environ: dict[str, object] = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/p\xc3\xa4th?q=1",  # PEP 3333: the UTF-8 bytes of /päth, as latin-1
        "PATH_INFO": "/p\xc3\xa4th",
        "QUERY_STRING": "q=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.1.2.3",
        "HTTP_USER_AGENT": 'evil"agent\\\n127.0.0.1 - - fake line',
        "HTTP_REFERER": "http://example.test/",
        "HTTP_X_TRACE": "trace-1",
        "CONTENT_TYPE": "text/plain",
        "forkserve.request_id": "rid-1",
    }
    environ.update(extra)
    return environ


def _response(status: int = 201, sent: int = 42) -> Response:
    response = Response(None, False, True, lambda: True)  # type: ignore[arg-type]
    response.status = f"{status} Whatever"
    response.status_code = status
    response.headers = [("Content-Type", "text/html"), ("X-Out", "value 1"), ("X-Out", "value 2")]
    response.sent = sent
    return response


def test_escape_makes_one_safe_ascii_field():
    assert escape("plain text /a?b=c") == "plain text /a?b=c"
    assert escape('a"b') == 'a\\"b'
    assert escape("back\\slash") == "back\\\\slash"
    assert escape("line\nbreak\r\ttab\x00nul\x7fdel") == "line\\x0abreak\\x0d\\x09tab\\x00nul\\x7fdel"
    assert escape("zoë €") == "zo\\xeb \\u20ac"


def test_default_format_is_gunicorns_and_escapes_values():
    line = LineFormat(DEFAULT_ACCESS_LOG_FORMAT).render(_environ(), _response(), 0.25, 99)
    match = COMMON_LINE.match(line)
    assert match, line
    assert "\n" not in line and line.isascii()
    assert match["h"] == "10.1.2.3" and match["u"] == "-"
    assert match["r"] == "GET /p\\xc3\\xa4th?q=1 HTTP/1.1"
    assert match["s"] == "201" and match["b"] == "42" and match["f"] == "http://example.test/"
    assert match["a"] == 'evil\\"agent\\\\\\x0a127.0.0.1 - - fake line'


def test_every_atom():
    fmt = " | ".join(f"{atom}=%({atom})s" for atom in "hlutrsmUqHbBfaTDMLp") + (
        " | %({x-trace}i)s %({Content-Type}i)s %({x-out}o)s %({forkserve.request_id}e)s %({missing}i)s"
        " %({remote_addr}e)s %(nonsense)s"
    )
    auth = base64.b64encode(b"alice:secret").decode()
    line = LineFormat(fmt).render(_environ(HTTP_AUTHORIZATION=f"Basic {auth}"), _response(), 2.0625, 4321)
    fields = dict(item.split("=", 1) for item in line.split(" | ")[:-1])
    assert fields["h"] == "10.1.2.3" and fields["l"] == "-" and fields["u"] == "alice"
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", fields["t"])
    assert fields["r"] == "GET /p\\xc3\\xa4th?q=1 HTTP/1.1"
    assert (fields["s"], fields["m"], fields["U"], fields["q"], fields["H"]) == (
        "201", "GET", "/p\\xc3\\xa4th", "q=1", "HTTP/1.1")
    assert (fields["b"], fields["B"], fields["f"]) == ("42", "42", "http://example.test/")
    assert fields["a"].startswith("evil\\")
    assert (fields["T"], fields["D"], fields["M"], fields["L"], fields["p"]) == (
        "2", "2062500", "2062", "2.062500", "<4321>")
    # {header}i case-insensitive; {header}o the last value; {var}e exact or case-insensitive; '-'
    assert line.split(" | ")[-1] == "trace-1 text/plain value 2 rid-1 - 10.1.2.3 -"


def test_missing_values_and_no_status_show_dashes():
    environ = _environ()
    del environ["HTTP_REFERER"], environ["HTTP_USER_AGENT"]
    line = LineFormat(DEFAULT_ACCESS_LOG_FORMAT).render(environ, _response(status=0, sent=0), 0.0, 1)
    assert line.endswith('"GET /p\\xc3\\xa4th?q=1 HTTP/1.1" - 0 "-" "-"')


def test_bad_formats_are_refused_up_front():
    for bad in ("%(h)s %(", "%(h)q", "%(h)s %"):
        with pytest.raises(ValueError, match="access_log_format"):
            compile_format(bad)
    result = run_forkserve("--access-logformat", "%(h)s %(", "--access-logfile", "-", "simple_apps:hello")
    assert result.returncode == 2
    assert "access_log_format" in result.stderr and "Traceback" not in result.stderr


def test_json_format_is_one_valid_object_per_line():
    assert isinstance(compile_format(" JSON "), JsonFormat)
    line = JsonFormat().render(_environ(), _response(), 0.0015, 77)
    assert "\n" not in line and line.isascii()
    record = json.loads(line)
    assert record["remote_addr"] == "10.1.2.3" and record["method"] == "GET"
    assert record["path"] == "/päth" and record["query"] == "q=1" and record["protocol"] == "HTTP/1.1"
    assert record["status"] == 201 and record["bytes"] == 42 and record["duration_us"] == 1500
    assert record["user_agent"] == 'evil"agent\\\n127.0.0.1 - - fake line'
    assert record["referer"] == "http://example.test/" and record["request_id"] == "rid-1"
    assert record["pid"] == 77
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", record["time"])


# -- end to end ----------------------------------------------------------------------------------


def test_access_log_off_by_default_and_error_log_lines_are_shaped(start_server):
    server = start_server("-w", "1", "demo.wsgi:application")
    assert requests.get(server.url + "/hello", timeout=5).status_code == 200
    assert server.stdout() == ""
    lines = [line for line in server.log().splitlines() if line.startswith("[")]
    assert lines and all(ERROR_LINE.match(line) for line in lines), lines


def test_json_access_log_on_stdout(start_server):
    server = start_server("-w", "1", "--access-logfile", "-", "--access-logformat", "json", "demo.wsgi:application")
    reply = requests.get(server.url + "/json?a=1", headers={"User-Agent": "tester/1.0", "Referer": "http://r.test/"},
                         timeout=5)
    request_id = reply.headers["X-Request-ID"]

    def record() -> dict[str, object] | None:
        for line in server.stdout().splitlines():
            item = json.loads(line)
            if item["path"] == "/json":
                return item
        return None

    item = wait_for(record, 10, message="the JSON access log line")
    assert item["query"] == "a=1" and item["status"] == 200 and item["method"] == "GET"
    assert item["user_agent"] == "tester/1.0" and item["referer"] == "http://r.test/"
    assert item["request_id"] == request_id and item["pid"] in server.workers()
    assert item["bytes"] == len(reply.content) and item["duration_us"] > 0


def test_usr1_reopens_access_and_captured_error_log(start_server, tmp_path):
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    server = start_server("-w", "2", "--access-logfile", str(access), "--error-logfile", str(errors),
                          "--capture-output", "observed_apps:printing")
    assert requests.get(server.url + "/before", timeout=5).text == "printed\n"
    wait_for(lambda: "/before" in access.read_text(), 10, message="the access log line")
    line = next(line for line in access.read_text().splitlines() if "/before" in line)
    assert COMMON_LINE.match(line) and '"GET /before HTTP/1.1" 200 8 ' in line
    wait_for(lambda: "app printed for /before" in errors.read_text()
             and "app wrote fd 2 for /before" in errors.read_text(), 10, message="captured app output")
    assert "starting (master pid" in errors.read_text()

    access.rename(tmp_path / "access.log.1")
    errors.rename(tmp_path / "error.log.1")
    server.signal(signal.SIGUSR1)
    counter = iter(range(1000))

    def logged_in_new_files() -> bool:
        path = f"/after{next(counter)}"
        requests.get(server.url + path, timeout=5)
        return access.exists() and path in access.read_text()

    wait_for(logged_in_new_files, 15, interval=0.1, message="access lines in the reopened file")
    rotated = {str(tmp_path / "access.log.1"), str(tmp_path / "error.log.1")}

    def every_worker_reopened() -> bool:
        """No worker still holds a rotated file (each reopens at its next tick; the kernel may
        hand the requests above to one of them only)."""
        for pid in server.workers():
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in rotated:
                        return False
        return True

    wait_for(every_worker_reopened, 15, message="every worker to reopen its log files")
    # Once both workers have reopened, every request lands in the new files (none in the old).
    for _ in range(6):
        requests.get(server.url + "/settled", timeout=5)
    wait_for(lambda: access.read_text().count("/settled") == 6, 10, message="all settled lines")
    assert "/settled" not in (tmp_path / "access.log.1").read_text()
    wait_for(lambda: "app printed for /settled" in errors.read_text(), 10, message="captured output, new file")
    assert "/settled" not in (tmp_path / "error.log.1").read_text()
    assert server.stdout() == ""


def test_logconfig_dict_routes_the_access_log(start_server, tmp_path):
    target = tmp_path / "custom-access.log"
    config = tmp_path / "forkserve.conf.py"
    config.write_text(
        "logconfig_dict = {\n"
        "    'formatters': {'tagged': {'format': 'CUSTOM %(message)s'}},\n"
        f"    'handlers': {{'file': {{'class': 'logging.FileHandler', 'filename': {str(target)!r},"
        " 'formatter': 'tagged'}},\n"
        "    'loggers': {'forkserve.access': {'handlers': ['file'], 'level': 'INFO', 'propagate': False}},\n"
        "}\n"
    )
    server = start_server("-c", str(config), "-w", "1", "--access-logformat", "%(m)s %(U)s %(s)s",
                          "demo.wsgi:application")
    requests.get(server.url + "/no/such/page", timeout=5)
    wait_for(lambda: target.exists() and "CUSTOM GET /no/such/page 404" in target.read_text(), 10,
             message="the access line through logconfig_dict's handler")
    assert os.path.getsize(target) > 0 and server.stdout() == ""


def test_capture_output_to_stderr_keeps_the_access_log_on_stdout(start_server):
    server = start_server("-w", "1", "--capture-output", "--access-logfile", "-", "observed_apps:printing")
    requests.get(server.url + "/x", timeout=5)
    wait_for(lambda: "app printed for /x" in server.log() and '"GET /x HTTP/1.1" 200' in server.stdout(), 10,
             message="app output in the error log, access line on stdout")
    assert "app printed" not in server.stdout() and "app wrote fd 2" in server.log()
    assert "GET /x" not in server.log()
