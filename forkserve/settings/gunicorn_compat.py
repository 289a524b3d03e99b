"""gunicorn's settings, every one of them, with forkserve's answer: the table behind the migration.

forkserve keeps gunicorn's names, so a gunicorn user's ``gunicorn.conf.py`` and command line
should run by renaming the command, or stop at once with the exact replacement. That needs an
answer for *each* of gunicorn's settings, kept in one table so the command line, the config file
and the README's migration table cannot disagree:

- :data:`SHARED`: gunicorn settings forkserve has under the same name, each marked ``same``,
  ``mapped`` (gunicorn's spelling of a flag or value is accepted and converted, same meaning) or
  ``different`` (same name, documented difference).
- :data:`ANSWERS`: gunicorn settings forkserve does not have, each with a one-line answer (what to
  use instead, or why there is none), the gunicorn flags that are recognised only to give that
  answer, and the values that ask for nothing forkserve lacks (gunicorn's default, or any value of
  a setting gunicorn itself ignores here, such as ``ssl_context`` without ``certfile``), which are
  accepted and noted instead of refused.

An answer whose name becomes a forkserve setting (the TLS settings, StatsD, ... are on their way)
stops being used at once: every consumer asks :func:`answer_for` with the registry's names, so the
setting wins; a test then fails until the answer line is deleted and the name moves to SHARED.

This module imports only the validators (the registry imports :func:`worker_class` from here), and
never gunicorn: gunicorn is not a dependency. The tests check the table against the installed
gunicorn's ``KNOWN_SETTINGS``: names, flags, defaults.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from forkserve.settings import validators as v

GUNICORN_MAJOR = 27  # the gunicorn release the table was checked against (the tests check it)

SAME, MAPPED, DIFFERENT = "same", "mapped", "different"


@dataclass(frozen=True)
class Shared:
    """A gunicorn setting forkserve has under the same name.

    ``aliases`` are gunicorn's flag spellings that forkserve's own flags do not cover; they are
    accepted, hidden from ``--help``. ``note`` says what is mapped or what differs.
    """

    status: str = SAME
    note: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Answer:
    """A gunicorn setting forkserve does not have.

    ``line`` is the one-line answer ('{value}' is replaced by the value given). ``takes`` is how
    gunicorn's flags take a value: 'value', 'flag' (a switch), 'optional' (a value or ``const``),
    'list' (repeatable). ``inert`` lists values that ask for nothing forkserve lacks: gunicorn's
    default first, then its other spellings of it or what forkserve does anyway;
    with ``ignored`` set, gunicorn itself ignores any value here and ``ignored`` says why.
    ``later``: forkserve will have it (announced as "not available yet").
    """

    line: str
    flags: tuple[str, ...] = ()
    takes: str = "value"
    inert: tuple[Any, ...] = ()
    ignored: str = ""
    later: bool = False
    const: Any = None

    def verdict(self) -> str:
        """How the answer starts: whether forkserve will have it."""
        return "is not available in forkserve yet" if self.later else "is not in forkserve"


_HOOK_OBJECTS = ("same arguments, same moments; the server and worker passed are forkserve's (with "
                 "gunicorn's `server.log`, `server.cfg`, `worker.log`, `worker.cfg`)")

SHARED: dict[str, Shared] = {
    "config": Shared(DIFFERENT, "default `./forkserve.conf.py`, else `./gunicorn.conf.py`; `python:MODULE` "
                     "and `file:PATH` as in gunicorn; a name that is neither a setting nor one of "
                     "gunicorn's is an error (gunicorn ignores it); prefix helpers with `_`"),
    "wsgi_app": Shared(),
    "bind": Shared(),
    "backlog": Shared(),
    "workers": Shared(DIFFERENT, "default 2 × usable CPUs + 1 (cgroup quota and affinity aware); "
                      "gunicorn's is 1"),
    "worker_class": Shared(MAPPED, "`sync` and `gthread` (also as `gunicorn.workers.sync.SyncWorker`, "
                           "`egg:gunicorn#gthread`, ...) are one worker, an I/O loop per process; "
                           "gevent, eventlet, tornado, ASGI and custom classes are refused with "
                           "what to use instead"),
    "threads": Shared(SAME, "threads running the app in each worker, as gunicorn's gthread worker "
                      "(forkserve's `sync` is that worker too)"),
    "worker_connections": Shared(DIFFERENT, "gunicorn: clients at once, gthread and gevent workers "
                                 "only; forkserve: connections each worker's loop holds (reading, "
                                 "idle, waiting for the app, flushing), every worker"),
    "max_requests": Shared(DIFFERENT, "also a hard limit, but the replacement is forked ahead and "
                           "the old worker stops once it is up, so capacity does not dip"),
    "max_requests_jitter": Shared(),
    "timeout": Shared(DIFFERENT, "gunicorn kills any worker silent that long, one stuck on a slow "
                      "client too; forkserve times the app's work on one request (and a deadlocked "
                      "idle worker), logs its stack first; slow clients get `header_timeout` / "
                      "`body_timeout`"),
    "graceful_timeout": Shared(DIFFERENT, "on TERM the workers also serve every connection queued "
                               "in the listen backlog (gunicorn drops them), within this time"),
    "keepalive": Shared(DIFFERENT, "gunicorn's sync worker ignores it (closes after each "
                        "response); every forkserve worker holds idle connections this long"),
    "limit_request_line": Shared(DIFFERENT, "gunicorn caps it at 8190 and reads 0 as 1 MiB; forkserve "
                                 "honours larger values, and 0 is its 64 KiB hard cap"),
    "limit_request_fields": Shared(),
    "limit_request_field_size": Shared(MAPPED, "gunicorn's flag `--limit-request-field_size` is "
                                       "accepted; forkserve's is `--limit-request-field-size`",
                                       aliases=("--limit-request-field_size",)),
    "reload": Shared(),
    "reload_extra_files": Shared(DIFFERENT, "files only: a glob pattern (gunicorn 27 re-expands "
                                 "them) is refused, naming `glob.glob(...)` as the replacement"),
    "check_config": Shared(),
    "print_config": Shared(SAME, "also says where each value came from"),
    "preload_app": Shared(),
    "sendfile": Shared(MAPPED, "`--no-sendfile` as in gunicorn (and `--sendfile`); `sendfile = None`, "
                       "gunicorn's default, means on"),
    "reuse_port": Shared(),
    "chdir": Shared(),
    "daemon": Shared(),
    "raw_env": Shared(),
    "pidfile": Shared(),
    "worker_tmp_dir": Shared(DIFFERENT, "gunicorn: where heartbeat files go (often `/dev/shm`); "
                             "forkserve: where request bodies larger than `request_buffer_size` are "
                             "buffered (heartbeats use shared memory), so `/dev/shm` puts them in RAM"),
    "user": Shared(),
    "group": Shared(),
    "umask": Shared(MAPPED, "as gunicorn: an int, `0o22`, `0x12`; also `022` (octal, as the shell's "
                    "umask, which gunicorn refuses); digits gunicorn reads as decimal (`-m 18` is "
                    "0o22 there) are refused, naming both readings"),
    "secure_scheme_headers": Shared(SAME, "also a flag: `--secure-scheme-headers NAME=VALUE,...`"),
    "certfile": Shared(SAME, "HTTPS on every bound address; HUP loads renewed files (a renewal that "
                       "does not load keeps the old workers)"),
    "keyfile": Shared(),
    "ca_certs": Shared(),
    "cert_reqs": Shared(MAPPED, "gunicorn's 0/1/2 (the ssl module's CERT_NONE, CERT_OPTIONAL, "
                        "CERT_REQUIRED) or the words `none`, `optional`, `required`"),
    "ciphers": Shared(),
    "suppress_ragged_eofs": Shared(),
    "do_handshake_on_connect": Shared(DIFFERENT, "accepted; the handshake always runs in the worker's "
                                      "loop, before the request is read, without holding the worker"),
    "ssl_context": Shared(SAME, "`ssl_context(config, default_ssl_context_factory)`, called in each worker"),
    "proxy_protocol": Shared(SAME, "`off`, `v1`, `v2`, `auto` (the flag alone); true means `auto`"),
    "proxy_allow_ips": Shared(),
    "protocol": Shared(SAME, "`http` or `uwsgi` (nginx's uwsgi_pass; see conf/nginx-uwsgi.conf)"),
    "uwsgi_allow_ips": Shared(),
    "statsd_host": Shared(SAME, "gunicorn's metric names and types, plus forkserve's under the same prefix"),
    "statsd_prefix": Shared(),
    "dogstatsd_tags": Shared(),
    "enable_backlog_metric": Shared(),
    "control_socket": Shared(DIFFERENT, "the master's socket for `forkserve ctl` (status, workers N, reload, "
                             "reopen-logs, stop, stacks); by default beside the pidfile, else in "
                             "$XDG_RUNTIME_DIR or the start directory (gunicorn: ~/.gunicorn/gunicorn.ctl)"),
    "control_socket_mode": Shared(),
    "control_socket_disable": Shared(),
    "forwarded_allow_ips": Shared(DIFFERENT, "a trusted peer's `X-Forwarded-For` also sets "
                                  "`REMOTE_ADDR` to the client (gunicorn keeps the proxy's)"),
    "accesslog": Shared(),
    "access_log_format": Shared(SAME, "gunicorn's atoms, plus `json`"),
    "errorlog": Shared(),
    "loglevel": Shared(),
    "capture_output": Shared(),
    "logconfig_dict": Shared(),
    "proc_name": Shared(),
    "pythonpath": Shared(),
    "permit_obsolete_folding": Shared(),
    "header_map": Shared(),
    "http_parser": Shared(DIFFERENT, "default `h11` (gunicorn: `auto`); gunicorn's `python` is `h11`, its "
                          "`fast` is `httptools` (a C parser either way: llhttp here, gunicorn_h1c there; "
                          "`pip install 'forkserve[fast]'`), `auto` the C parser when installed; h11 "
                          "still judges anything unusual"),
    **{hook: Shared(SAME, _HOOK_OBJECTS) for hook in (
        "on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init",
        "worker_int", "worker_abort", "pre_exec", "pre_request", "child_exit", "worker_exit",
        "nworkers_changed", "on_exit")},
    "post_request": Shared(SAME, _HOOK_OBJECTS + "; a function of 2, 3 or 4 arguments, as in gunicorn"),
}

_TLS = "forkserve negotiates TLS 1.2 and 1.3 with the ssl module's secure defaults; set ciphers, or " \
       "return your own context from the ssl_context hook"
_STATSD = ("StatsD is coming; meanwhile scrape the Prometheus /metrics the master serves at "
           "stats_bind (e.g. stats_bind = '127.0.0.1:9100')")
_SYSLOG = ("log to syslog through logconfig_dict, with a logging.handlers.SysLogHandler "
           "(address='/dev/log' or ('HOST', 514))")
_ASGI = "forkserve serves WSGI only: serve an ASGI app with uvicorn or gunicorn's asgi worker"
_HTTP2 = ("forkserve speaks HTTP/1.1: let nginx speak HTTP/2 to clients (http2 on) and HTTP/1.1 "
          "to forkserve")
_DIRTY = "forkserve has no dirty worker pool: run heavy jobs in a task queue (Celery, RQ) or their own service"
_CONTROL = ("the control socket is coming; meanwhile signals (HUP, TTIN, TTOU, USR2...) and the "
            "stats endpoint (stats_bind, forkserve top --stats ADDRESS)")
_STRICT = "the request parser does not relax its checks: fix the client, or rewrite the request in the proxy"

ANSWERS: dict[str, Answer] = {
    # -- Server mechanics and debugging
    "reload_engine": Answer(
        "forkserve's --reload polls once a second", ("--reload-engine",),
        ignored="whichever engine is named"),
    "spew": Answer(
        "trace one worker yourself: sys.settrace(...) in a post_fork hook, with workers = 1",
        ("--spew",), "flag", (False,)),
    "initgroups": Answer(
        "forkserve always gives workers the user's supplementary groups", ("--initgroups",), "flag",
        ignored="forkserve does so whatever the value"),
    "tmp_upload_dir": Answer(
        "forkserve buffers large request bodies in worker_tmp_dir",
        ignored="gunicorn does not use it either"),
    "default_proc_name": Answer("set proc_name, which defaults to the app spec", inert=("gunicorn",)),
    "paste": Answer(
        "load the app in a module of yours: application = paste.deploy.loadapp('config:' + "
        "os.path.abspath('{value}')), and serve module:application", ("--paste", "--paster"), inert=(None,)),
    "raw_paste_global_conf": Answer(
        "pass them as global_conf={...} to paste.deploy.loadapp in your app module (see 'paste')",
        ("--paste-global",), "list", ([],)),
    "enable_stdio_inheritance": Answer(
        "a forkserve daemon's stdio is /dev/null: set errorlog and accesslog to files, and "
        "capture_output = True for what the app prints", ("-R", "--enable-stdio-inheritance"), "flag", (False,)),
    "strip_header_spaces": Answer(
        "forkserve refuses a space before the colon with 400; " + _STRICT, ("--strip-header-spaces",), "flag", (False,)),
    "permit_unconventional_http_method": Answer(
        "forkserve accepts any upper-case token as a method; " + _STRICT,
        ("--permit-unconventional-http-method",), "flag", (False,)),
    "permit_unconventional_http_version": Answer(
        "forkserve serves HTTP/1.0 and HTTP/1.1, and answers 505 to other versions; " + _STRICT,
        ("--permit-unconventional-http-version",), "flag", (False,)),
    "casefold_http_method": Answer(
        "forkserve refuses lower-case methods with 400; " + _STRICT, ("--casefold-http-method",), "flag", (False,)),
    "forwarder_headers": Answer(
        "forkserve takes no WSGI variables from headers: set SCRIPT_NAME in the environment "
        "(raw_env = ['SCRIPT_NAME=/prefix']), or strip the prefix in nginx",
        ("--forwarder-headers",), inert=("SCRIPT_NAME,PATH_INFO",)),
    # -- TLS
    "ssl_version": Answer(
        _TLS, ("--ssl-version",),
        ignored="gunicorn ignores it too (deprecated since 21.0)"),
    # -- Logging
    "disable_redirect_access_to_syslog": Answer(
        _SYSLOG, ("--disable-redirect-access-to-syslog",), "flag",
        ignored="gunicorn uses it only with syslog"),
    "logger_class": Answer(
        "forkserve has no pluggable logger: configure the 'forkserve.error' and 'forkserve.access' "
        "loggers with logconfig_dict", ("--logger-class",), inert=("gunicorn.glogging.Logger",)),
    "logconfig": Answer(
        "forkserve takes dictConfig only: logconfig_dict = {...} (the .ini file's loggers, handlers "
        "and formatters as a dict)", ("--log-config",), inert=(None,)),
    "logconfig_json": Answer(
        "in the config file: logconfig_dict = json.load(open('{value}'))", ("--log-config-json",),
        inert=(None,)),
    "syslog_addr": Answer(_SYSLOG, ("--log-syslog-to",), ignored="gunicorn uses it only with syslog"),
    "syslog": Answer(_SYSLOG, ("--log-syslog",), "flag", (False,)),
    "syslog_prefix": Answer(_SYSLOG, ("--log-syslog-prefix",), ignored="gunicorn uses it only with syslog"),
    "syslog_facility": Answer(_SYSLOG, ("--log-syslog-facility",), ignored="gunicorn uses it only with syslog"),
    # -- ASGI and HTTP/2
    "asgi_loop": Answer(_ASGI, ("--asgi-loop",), ignored="gunicorn uses it only with the asgi worker"),
    "asgi_lifespan": Answer(_ASGI, ("--asgi-lifespan",), ignored="gunicorn uses it only with the asgi worker"),
    "asgi_disconnect_grace_period": Answer(
        _ASGI, ("--asgi-disconnect-grace-period",), ignored="gunicorn uses it only with the asgi worker"),
    "websocket_max_message_size": Answer(
        _ASGI + "; put websockets there too", ("--websocket-max-message-size",),
        ignored="gunicorn uses it only with the asgi worker"),
    "root_path": Answer(
        _ASGI + "; for a WSGI app set SCRIPT_NAME in the environment (raw_env)", ("--root-path",),
        ignored="gunicorn uses it only with the asgi worker"),
    "http_protocols": Answer(_HTTP2, ("--http-protocols",), inert=("h1", None)),
    "http2_cleartext": Answer(_HTTP2, ("--http2-cleartext",), inert=("off", False, None)),
    "http2_max_concurrent_streams": Answer(
        _HTTP2, ("--http2-max-concurrent-streams",), ignored="gunicorn uses it only with HTTP/2"),
    "http2_initial_window_size": Answer(
        _HTTP2, ("--http2-initial-window-size",), ignored="gunicorn uses it only with HTTP/2"),
    "http2_max_frame_size": Answer(_HTTP2, ("--http2-max-frame-size",), ignored="gunicorn uses it only with HTTP/2"),
    "http2_max_header_list_size": Answer(
        _HTTP2, ("--http2-max-header-list-size",), ignored="gunicorn uses it only with HTTP/2"),
    # -- Dirty arbiters
    "dirty_apps": Answer(_DIRTY, ("--dirty-app",), "list", ([],)),
    "dirty_workers": Answer(_DIRTY, ("--dirty-workers",), inert=(0,)),
    "dirty_timeout": Answer(_DIRTY, ("--dirty-timeout",), ignored="gunicorn uses it only with dirty_apps"),
    "dirty_threads": Answer(_DIRTY, ("--dirty-threads",), ignored="gunicorn uses it only with dirty_apps"),
    "dirty_graceful_timeout": Answer(
        _DIRTY, ("--dirty-graceful-timeout",), ignored="gunicorn uses it only with dirty_apps"),
    "on_dirty_starting": Answer(_DIRTY, ignored="gunicorn calls it only with dirty_apps"),
    "dirty_post_fork": Answer(_DIRTY, ignored="gunicorn calls it only with dirty_apps"),
    "dirty_worker_init": Answer(_DIRTY, ignored="gunicorn calls it only with dirty_apps"),
    "dirty_worker_exit": Answer(_DIRTY, ignored="gunicorn calls it only with dirty_apps"),
    # -- Control socket
}

# Settings gunicorn ignores unless this other one is set: each must stay an answer while they are
# (a test checks), so that accepting them whatever their value stays true.
IGNORED_UNLESS: dict[str, str] = {
    "disable_redirect_access_to_syslog": "syslog", "syslog_addr": "syslog", "syslog_prefix": "syslog",
    "syslog_facility": "syslog", "http2_max_concurrent_streams": "http_protocols",
    "http2_initial_window_size": "http_protocols", "http2_max_frame_size": "http_protocols",
    "http2_max_header_list_size": "http_protocols", "dirty_timeout": "dirty_apps",
    "dirty_threads": "dirty_apps", "dirty_graceful_timeout": "dirty_apps",
    "on_dirty_starting": "dirty_apps", "dirty_post_fork": "dirty_apps", "dirty_worker_init": "dirty_apps",
    "dirty_worker_exit": "dirty_apps",
}


def answer_for(name: str, known: Collection[str]) -> Answer | None:
    """The answer for gunicorn setting ``name``, unless forkserve has a setting of that name
    (``known``): a setting that lands makes its answer disappear without anyone editing here."""
    if name in known:
        return None
    return ANSWERS.get(name)


def hidden_flags(known: Collection[str]) -> dict[str, Answer]:
    """gunicorn's flags of the answered settings, which the parser recognises to give the answer."""
    return {name: answer for name, answer in ANSWERS.items() if answer.flags and name not in known}


def judge(answer: Answer, value: Any) -> tuple[bool, str]:
    """(accepted, text) for a gunicorn-only setting (its ``answer``) set to ``value``.

    Accepted when the value asks for nothing forkserve lacks: text is then why it is ignored.
    Otherwise text is the one-line answer, ``verdict: line``.
    """
    if answer.ignored:
        return True, answer.ignored
    for index, inert in enumerate(answer.inert):
        if _matches(value, inert):
            return True, "it is gunicorn's default" if index == 0 else "forkserve does so anyway"
    shown = value if isinstance(value, str) else repr(value)
    return False, f"{answer.verdict()}: {answer.line.replace('{value}', shown)}"


def _matches(value: Any, inert: Any) -> bool:
    """Whether ``value`` (a Python object or its command-line string) means ``inert``."""
    if isinstance(inert, bool):
        try:
            return v.boolean(value) is inert
        except ValueError:
            return False
    if isinstance(inert, int):
        if isinstance(value, bool):
            return False
        try:
            return (value if isinstance(value, int) else int(str(value).strip(), 0)) == inert
        except ValueError:
            return False
    return _words(value) == _words(inert)


def _words(value: Any) -> tuple[str, ...] | None:
    """Text and lists compared as their comma-separated words; nothing, '' and [] are alike."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip().lower() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple)):
        words = [_words(item) for item in value]
        return None if None in words else tuple(w for group in words if group for w in group)
    return None


def gunicorn_spelling(name: str, given: Any, value: Any) -> str:
    """', gunicorn's X' when ``given`` is gunicorn's spelling of another value, for the source
    --print-config shows (``worker_class = 'sync'  # gunicorn.conf.py line 3, gunicorn's 'egg:...'``)."""
    if name == "worker_class" and isinstance(given, (str, type)) and given != value:
        shown = given if isinstance(given, str) else f"{given.__module__}.{given.__qualname__}"
        return f", gunicorn's '{shown}'" if shown.strip().lower() != value else ""
    if name in ("sendfile", "http_parser") and given is None:
        return ", gunicorn's None"
    if name == "http_parser" and isinstance(given, str) and given.strip().lower() != value:
        return f", gunicorn's '{given}'"
    return ""


# -- http_parser: forkserve's two parsers by gunicorn's words too ---------------------------------

_PARSER_SPELLINGS = {"h11": "h11", "python": "h11", "httptools": "httptools", "fast": "httptools", "auto": "auto"}
FAST_EXTRA = "pip install 'forkserve[fast]'"


def http_parser(value: Any) -> str:
    """'h11', 'httptools' or 'auto', by forkserve's words or gunicorn's ('python', 'fast'; None is
    gunicorn's 'auto'). An explicit 'httptools' must import here, so a missing install stops the
    start (or a HUP) with the fix, instead of leaving workers that cannot read a request."""
    key = "auto" if value is None else value.strip().lower() if isinstance(value, str) else None
    if key not in _PARSER_SPELLINGS:
        raise ValueError(f"expected one of h11, httptools, auto (gunicorn's python, fast), got {value!r}")
    parser = _PARSER_SPELLINGS[key]
    if parser == "httptools":
        missing = httptools_missing()
        if missing:
            raise ValueError(f"= '{value}': httptools cannot be imported ({missing}): {FAST_EXTRA}")
    return parser


def httptools_missing() -> str | None:
    """Why httptools cannot be imported, or None when it can (settings check it for 'httptools',
    a worker for 'auto')."""
    try:
        import httptools  # noqa: F401 -- only whether it imports
    except ImportError as error:
        return str(error)
    return None


# -- worker_class: gunicorn's spellings of forkserve's worker, and answers for the others ----------

_WORKER_SPELLINGS = {
    "sync": "sync", "gthread": "gthread",
    "gunicorn.workers.sync.syncworker": "sync", "gunicorn.workers.gthread.threadworker": "gthread",
    "egg:gunicorn#sync": "sync", "egg:gunicorn#gthread": "gthread",
}
_GREEN = ("gevent", "eventlet", "tornado")
_USE_THREADS = ("for an I/O-bound app set threads = N (N requests at once per worker) with the "
                "default worker_class 'sync'")


def worker_class(value: Any) -> str:
    """forkserve's worker by any of gunicorn's names ('sync', 'gthread', their class paths, egg: URIs
    or the classes themselves), or a ValueError that says what to use instead of another worker."""
    if isinstance(value, type):
        value = f"{value.__module__}.{value.__qualname__}"
    if not isinstance(value, str):
        raise ValueError(f"expected a worker class name such as 'sync', got {value!r}")  # noqa: TRY004 -- as validators.py
    key = value.strip().lower()
    if key in _WORKER_SPELLINGS:
        return _WORKER_SPELLINGS[key]
    if "asgi" in key or "uvicorn" in key:
        raise ValueError(f"= '{value}': {_ASGI}; a Django or Flask app's WSGI entry point (wsgi.py, "
                         "app:app) runs with the default worker_class 'sync'")
    green = next((name for name in _GREEN if name in key), None)
    if green:
        raise ValueError(f"= '{value}': forkserve has no {green} worker; {_USE_THREADS}")
    raise ValueError(f"= '{value}': forkserve has one worker, 'sync' (alias 'gthread'), and no custom "
                     "worker classes; move per-worker setup into hooks (post_fork, post_worker_init) "
                     f"and {_USE_THREADS}")
