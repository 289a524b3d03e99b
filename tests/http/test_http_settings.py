"""The HTTP settings whose behaviour the request corpus (one fixed configuration) cannot show:
header_map's other policies, permit_obsolete_folding, the 0 = hard cap / unlimited forms of the
limits, and custom secure_scheme_headers."""

from __future__ import annotations

import json

from http_wire import exchange


def ask(server, *headers: str, target: str = "/environ", body: bytes = b"", method: str = "GET"):
    lines = [f"{method} {target} HTTP/1.1", "Host: example.com", "Connection: close", *headers]
    (response,), reader = exchange(server.address, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    reader.sock.close()
    return response


def test_header_map_refuse_answers_400(start_server) -> None:
    server = start_server("recording_app:app", "-w", "1", "--header-map", "refuse")
    response = ask(server, "X_User: evil")
    assert (response.status, response.header("Connection")) == (400, "close")
    assert "400 header name with underscore: b'X_User'" in server.log()
    assert ask(server, "X-User: fine").status == 200


def test_header_map_dangerous_passes_underscores_through(start_server) -> None:
    server = start_server("recording_app:app", "-w", "1", "--header-map", "dangerous")
    environ = json.loads(ask(server, "X_User: evil", "X-User: good").body)
    assert environ["HTTP_X_USER"] == "evil,good"  # the collision the default policy prevents


def test_permit_obsolete_folding_unfolds(start_server) -> None:
    server = start_server("recording_app:app", "-w", "1", "--permit-obsolete-folding")
    environ = json.loads(ask(server, "X-Folded: one", "\ttwo").body)
    assert environ["HTTP_X_FOLDED"] == "one two"


def test_zero_request_line_limit_means_the_hard_cap(start_server) -> None:
    server = start_server("recording_app:app", "-w", "1", "--limit-request-line", "0")
    long_path = "/" + "a" * 20_000
    assert json.loads(ask(server, target=f"/environ?{long_path}").body)["QUERY_STRING"] == long_path
    assert ask(server, target="/" + "b" * 70_000).status == 414


def test_zero_field_limits_mean_the_hard_caps(start_server) -> None:
    server = start_server("recording_app:app", "-w", "1", "--limit-request-fields", "0",
                          "--limit-request-field-size", "0")
    many = [f"X-F{i}: v" for i in range(300)]
    environ = json.loads(ask(server, *many, "X-Long: " + "c" * 20_000).body)
    assert environ["HTTP_X_F299"] == "v" and len(environ["HTTP_X_LONG"]) == 20_000


def test_body_limit_and_unlimited(start_server) -> None:
    limited = start_server("recording_app:app", "-w", "1", "--limit-request-body", "10")
    assert ask(limited, "Content-Length: 11", target="/", method="POST", body=b"x" * 11).status == 413
    assert ask(limited, "Content-Length: 10", target="/", method="POST", body=b"x" * 10).status == 200
    unlimited = start_server("recording_app:app", "-w", "1", "--limit-request-body", "0")
    body = b"y" * 3_000_000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                      for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
    response = ask(unlimited, "Transfer-Encoding: chunked", target="/", method="POST", body=chunks)
    assert response.status == 200 and json.loads(response.body)["length"] == len(body)


def test_custom_secure_scheme_headers(start_server) -> None:
    server = start_server("recording_app:app", "-w", "1", "--secure-scheme-headers", "X-Scheme=https")
    assert json.loads(ask(server, "X-Scheme: https").body)["wsgi.url_scheme"] == "https"
    # The default names no longer count.
    assert json.loads(ask(server, "X-Forwarded-Proto: https").body)["wsgi.url_scheme"] == "http"
