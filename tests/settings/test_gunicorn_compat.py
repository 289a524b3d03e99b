"""Every gunicorn setting has forkserve's answer: checked against the installed gunicorn's own
settings (names, flags, defaults), then on the command line and in config files."""

from __future__ import annotations

import argparse
import dataclasses
import re

import gunicorn
import gunicorn.config
import pytest
from conftest import run_forkserve

from forkserve.settings import gunicorn_compat as compat
from forkserve.settings import validators as v
from forkserve.settings.gunicorn_compat import ANSWERS, DIFFERENT, MAPPED, SAME, SHARED
from forkserve.settings.registry import SETTINGS, Setting
from forkserve.settings.resolve import UsageError, build_parser, resolve

GUNICORN = {setting.name: setting for setting in gunicorn.config.KNOWN_SETTINGS}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(*args: str, cwd, env: dict[str, str] | None = None) -> str:
    """What a forkserve command that must stop with a usage error (exit 2) printed."""
    result = run_forkserve(*args, "demo.wsgi:application", cwd=cwd, env=env)
    assert result.returncode == 2, result.stderr
    return result.stderr


# -- the table against gunicorn -------------------------------------------------------------------


def test_the_table_has_every_gunicorn_setting_once():
    assert int(gunicorn.__version__.split(".")[0]) == compat.GUNICORN_MAJOR
    missing = sorted(set(GUNICORN) - set(SHARED) - set(ANSWERS))
    assert not missing, f"gunicorn {gunicorn.__version__} settings without an answer: {missing}"
    assert not set(SHARED) - set(GUNICORN), "SHARED names a setting gunicorn does not have"
    assert not set(ANSWERS) - set(GUNICORN), "ANSWERS names a setting gunicorn does not have"
    assert not set(SHARED) & set(ANSWERS)
    assert set(SHARED) <= set(SETTINGS)
    assert {shared.status for shared in SHARED.values()} == {SAME, MAPPED, DIFFERENT}


def test_no_gunicorn_name_is_both_a_forkserve_setting_and_answered():
    stale = sorted(set(ANSWERS) & set(SETTINGS))
    assert not stale, (
        f"forkserve has {stale} now: delete their answers in forkserve/settings/gunicorn_compat.py "
        "and list them in SHARED (same, mapped or different)"
    )


def test_an_answer_stops_being_used_once_the_setting_exists(monkeypatch, in_tmp):
    """The TLS, StatsD, ... settings land while their answer lines are still in the table: the
    setting wins everywhere (flags, config file, docs) before anyone deletes the line."""
    setting = Setting("http_protocols", "HTTP", "h1", v.string, "Protocols.", ("--http-protocols",), "LIST")
    monkeypatch.setitem(SETTINGS, "http_protocols", setting)
    assert compat.answer_for("http_protocols", SETTINGS) is None
    assert resolve(["--http-protocols", "h2"], {}).http_protocols == "h2"
    (in_tmp / "forkserve.conf.py").write_text("http_protocols = 'h2,h1'\n")
    assert resolve([], {}).http_protocols == "h2,h1"
    from forkserve.settings import docs

    assert docs.gunicorn_rows()["http_protocols"] == ("see the settings reference", "a forkserve setting")


def _takes(option: gunicorn.config.Setting) -> str:
    action = getattr(option, "action", None)
    if action == "store_true":
        return "flag"
    if action == "append":
        return "list"
    return "optional" if getattr(option, "nargs", None) == "?" else "value"


def test_answered_settings_keep_gunicorns_flags():
    for name, answer in ANSWERS.items():
        option = GUNICORN[name]
        assert answer.flags == tuple(option.cli or ()), name
        if answer.flags:
            assert answer.takes == _takes(option), name
            assert answer.const == getattr(option, "const", None), name


def test_gunicorns_default_is_accepted_for_every_answered_setting():
    """Setting a gunicorn-only name to gunicorn's default asks for nothing: accepted, so
    gunicorn's own example config (spew = False, tmp_upload_dir = None) runs."""
    without = []
    for name, answer in ANSWERS.items():
        if not answer.ignored and not answer.inert:
            without.append(name)
            continue
        accepted, why = compat.judge(answer, GUNICORN[name].default)
        assert accepted, (name, why)
        if answer.inert:
            assert compat._matches(GUNICORN[name].default, answer.inert[0]), name
    assert without == []


def test_settings_accepted_whatever_their_value_depend_on_refused_ones():
    """'Accepted, ignored' holds only while gunicorn would ignore the value too: the setting each
    depends on must still be refused unless at its default (an answer, not a forkserve setting)."""
    for name, needed in compat.IGNORED_UNLESS.items():
        assert ANSWERS[name].ignored, name
        assert needed in ANSWERS and needed not in SETTINGS, (name, needed)
        assert ANSWERS[needed].inert and not ANSWERS[needed].ignored, needed
    asgi_only = [name for name, answer in ANSWERS.items() if "asgi worker" in answer.ignored]
    assert len(asgi_only) == 5
    for spelling in ("asgi", "gunicorn.workers.gasgi.ASGIWorker", "uvicorn.workers.UvicornWorker"):
        with pytest.raises(ValueError, match="WSGI only"):
            compat.worker_class(spelling)


def test_every_gunicorn_flag_of_a_shared_setting_reaches_that_setting():
    parser = build_parser()
    for name, shared in SHARED.items():
        for flag in GUNICORN[name].cli or ():
            takes_value = getattr(GUNICORN[name], "action", None) not in ("store_true", "store_const")
            parsed = vars(parser.parse_args([flag, "1"] if takes_value else [flag]))
            assert name in parsed, (name, flag)
        if shared.status == SAME:
            assert set(GUNICORN[name].cli or ()) <= set(SETTINGS[name].flags), name


# Defaults gunicorn works out at start (the current directory, the current user) or writes as a
# no-op function (hooks), which forkserve writes as None: the same behaviour.
COMPUTED_IN_GUNICORN = {"chdir", "user", "group"}


def test_same_settings_have_gunicorns_default():
    for name, shared in SHARED.items():
        if shared.status != SAME or name in COMPUTED_IN_GUNICORN or SETTINGS[name].hook_arity:
            continue
        assert SETTINGS[name].validator(GUNICORN[name].default) == SETTINGS[name].default, name


def test_answers_are_one_line_and_name_something_to_do():
    for name, answer in ANSWERS.items():
        accepted, text = compat.judge(answer, object())
        if not accepted:
            assert "\n" not in text and len(text) < 300, name
            assert text.startswith(("is not in forkserve: ", "is not available in forkserve yet: ")), name
    for name, shared in SHARED.items():
        assert shared.status == SAME or shared.note, name


def test_gunicorns_extra_flag_spellings_are_accepted_but_hidden():
    help_text = build_parser().format_help()
    for hidden in ("--limit-request-field_size", "--http-protocols", "--paste", "--spew"):
        assert hidden not in help_text
    assert resolve(["--limit-request-field_size", "100"], {}).limit_request_field_size == 100
    assert resolve(["--no-sendfile"], {}).sendfile is False


# -- worker_class ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "worker"), [
    ("sync", "sync"), ("gthread", "gthread"), ("SYNC", "sync"), ("egg:gunicorn#sync", "sync"),
    ("egg:gunicorn#gthread", "gthread"), ("gunicorn.workers.sync.SyncWorker", "sync"),
    ("gunicorn.workers.gthread.ThreadWorker", "gthread"),
])
def test_gunicorns_names_of_the_sync_and_gthread_workers(given, worker):
    assert compat.worker_class(given) == worker


def test_gunicorns_worker_classes_themselves_are_mapped():
    from gunicorn.workers.gthread import ThreadWorker
    from gunicorn.workers.sync import SyncWorker

    assert compat.worker_class(SyncWorker) == "sync"
    assert compat.worker_class(ThreadWorker) == "gthread"


@pytest.mark.parametrize(("given", "answer"), [
    ("gevent", "forkserve has no gevent worker; for an I/O-bound app set threads = N"),
    ("gunicorn.workers.ggevent.GeventWorker", "forkserve has no gevent worker"),
    ("gevent_pywsgi", "forkserve has no gevent worker"),
    ("eventlet", "forkserve has no eventlet worker"),
    ("tornado", "forkserve has no tornado worker"),
    ("uvicorn.workers.UvicornWorker", "forkserve serves WSGI only: serve an ASGI app with uvicorn"),
    ("uvicorn_worker.UvicornWorker", "forkserve serves WSGI only"),
    ("asgi", "forkserve serves WSGI only"),
    ("myproject.workers.CustomWorker", "forkserve has one worker, 'sync' (alias 'gthread'), and no custom"),
])
def test_other_worker_classes_are_refused_with_what_to_use(given, answer):
    with pytest.raises(ValueError, match=f"^= '{re.escape(given)}': {re.escape(answer)}"):
        compat.worker_class(given)


def test_unsupported_worker_class_on_the_command_line_and_in_a_config_file(in_tmp):
    assert refused("-k", "gevent", cwd=in_tmp) == (
        "forkserve: error: setting 'worker_class' = 'gevent': forkserve has no gevent worker; for an "
        "I/O-bound app set threads = N (N requests at once per worker) with the default worker_class "
        "'sync' (from command line)\n"
    )
    (in_tmp / "gunicorn.conf.py").write_text("workers = 4\nworker_class = 'uvicorn.workers.UvicornWorker'\n")
    assert refused("-c", "gunicorn.conf.py", cwd=in_tmp) == (
        "forkserve: error: setting 'worker_class' = 'uvicorn.workers.UvicornWorker': forkserve serves WSGI "
        "only: serve an ASGI app with uvicorn or gunicorn's asgi worker; a Django or Flask app's WSGI entry "
        "point (wsgi.py, app:app) runs with the default worker_class 'sync' (in gunicorn.conf.py line 2)\n"
    )


def test_print_config_says_which_gunicorn_spelling_a_value_came_from(in_tmp):
    (in_tmp / "gunicorn.conf.py").write_text("worker_class = 'gunicorn.workers.gthread.ThreadWorker'\n")
    config = resolve(["-c", "gunicorn.conf.py"], {})
    assert config.worker_class == "gthread"
    assert config.sources["worker_class"] == (
        "gunicorn.conf.py line 1, gunicorn's 'gunicorn.workers.gthread.ThreadWorker'"
    )
    assert resolve(["-k", "gthread"], {}).sources["worker_class"] == "command line"


# -- gunicorn-only settings: refused with the answer, or accepted when they ask for nothing --------


def test_gunicorn_only_flag_on_the_command_line_gets_its_answer(in_tmp):
    assert refused("--http-protocols", "h2,h1", cwd=in_tmp) == (
        "forkserve: error: --http-protocols (gunicorn's 'http_protocols') is not in forkserve: forkserve speaks "
        "HTTP/1.1: let nginx speak HTTP/2 to clients (http2 on) and HTTP/1.1 to forkserve\n"
    )
    assert refused(env={"FORKSERVE_CMD_ARGS": "--spew"}, cwd=in_tmp) == (
        "forkserve: error: FORKSERVE_CMD_ARGS: --spew (gunicorn's 'spew') is not in forkserve: trace one "
        "worker yourself: sys.settrace(...) in a post_fork hook, with workers = 1\n"
    )


def test_gunicorn_only_name_in_a_config_file_gets_its_answer_not_a_did_you_mean(in_tmp):
    (in_tmp / "gunicorn.conf.py").write_text("workers = 2\ncasefold_http_method = True\n")
    assert refused("-c", "gunicorn.conf.py", cwd=in_tmp) == (
        "forkserve: error: gunicorn setting 'casefold_http_method' in gunicorn.conf.py line 2 is not in "
        "forkserve: forkserve refuses lower-case methods with 400; the request parser does not relax its "
        "checks: fix the client, or rewrite the request in the proxy\n"
    )
    (in_tmp / "gunicorn.conf.py").write_text("logconfig_json = 'logging.json'\n")
    with pytest.raises(UsageError) as error:
        resolve(["-c", "gunicorn.conf.py"], {})
    assert str(error.value) == (
        "gunicorn setting 'logconfig_json' in gunicorn.conf.py line 1 is not in forkserve: in the config "
        "file: logconfig_dict = json.load(open('logging.json'))"
    )


@pytest.mark.parametrize(("line", "answer"), [
    ("http_protocols = 'h2,h1'", "is not in forkserve: forkserve speaks HTTP/1.1"),
    ("syslog = True", "is not in forkserve: log to syslog through logconfig_dict"),
    ("paste = 'production.ini'", ("is not in forkserve: load the app in a module of yours: application = "
                                 "paste.deploy.loadapp('config:' + os.path.abspath('production.ini'))")),
    ("dirty_apps = ['shop.ml:Model']", "is not in forkserve: forkserve has no dirty worker pool"),
    ("strip_header_spaces = True", "is not in forkserve: forkserve refuses a space before the colon with 400"),
])
def test_one_answer_per_kind_of_gunicorn_only_setting(in_tmp, line, answer):
    (in_tmp / "gunicorn.conf.py").write_text(line + "\n")
    name = line.split()[0]
    with pytest.raises(UsageError, match=f"^gunicorn setting '{name}' in gunicorn.conf.py line 1 {re.escape(answer)}"):
        resolve(["-c", "gunicorn.conf.py"], {})


def test_gunicorn_only_settings_that_ask_for_nothing_are_accepted_and_noted(in_tmp):
    (in_tmp / "gunicorn.conf.py").write_text(
        "spew = False\ntmp_upload_dir = None\ncasefold_http_method = False\nasgi_loop = 'uvloop'\n"
        "def ssl_context(conf, default_ssl_context_factory):\n    return default_ssl_context_factory()\n"
    )
    config = resolve(["-c", "gunicorn.conf.py", "--proxy-protocol", "off"], {})
    assert config.proxy_protocol == "off" and config.hook("ssl_context") is not None  # real settings now
    assert config.notes == [
        "gunicorn setting 'spew' = False (gunicorn.conf.py line 1) ignored: it is gunicorn's default",
        "gunicorn setting 'casefold_http_method' = False (gunicorn.conf.py line 3) ignored: it is gunicorn's default",
    ]
    assert [warning.split(" ignored: ")[0] for warning in config.warnings] == [
        "gunicorn setting 'tmp_upload_dir' (gunicorn.conf.py line 2)",
        "gunicorn setting 'asgi_loop' (gunicorn.conf.py line 4)",
    ]
    printed = run_forkserve("-c", "gunicorn.conf.py", "--print-config", cwd=in_tmp)
    assert printed.returncode == 0
    notes = printed.stdout.split("# Notes\n", 1)[1].splitlines()
    assert len(notes) == 4 and all(line.startswith("# gunicorn setting '") for line in notes)


# -- where gunicorn looks: ./gunicorn.conf.py, GUNICORN_CMD_ARGS, python:MODULE, file:PATH ---------


def test_gunicorn_conf_py_is_read_when_there_is_no_forkserve_conf_py(in_tmp):
    (in_tmp / "gunicorn.conf.py").write_text("workers = 3\n")
    config = resolve([], {})
    assert (config.workers, config.config, config.sources["config"]) == (
        3, "gunicorn.conf.py", "found in the current directory")
    (in_tmp / "forkserve.conf.py").write_text("workers = 5\n")
    config = resolve([], {})
    assert (config.workers, config.config) == (5, "forkserve.conf.py")
    assert config.notes == ["./gunicorn.conf.py is not read: ./forkserve.conf.py is"]


def test_gunicorn_cmd_args_is_read_when_forkserve_cmd_args_is_not_set(in_tmp):
    config = resolve([], {"GUNICORN_CMD_ARGS": "-w 3 -k gthread --threads 2"})
    assert (config.workers, config.worker_class, config.threads) == (3, "gthread", 2)
    assert config.sources["threads"] == "GUNICORN_CMD_ARGS"
    config = resolve([], {"GUNICORN_CMD_ARGS": "-w 3", "FORKSERVE_CMD_ARGS": "-w 4"})
    assert config.workers == 4
    assert config.warnings == ["GUNICORN_CMD_ARGS is ignored: FORKSERVE_CMD_ARGS is set"]
    with pytest.raises(UsageError, match=r"^GUNICORN_CMD_ARGS: --http-protocols \(gunicorn's 'http_protocols'\)"):
        resolve([], {"GUNICORN_CMD_ARGS": "--http-protocols h2"})


def test_config_as_python_module_or_file_uri_as_in_gunicorn(in_tmp):
    (in_tmp / "shopconf").mkdir()
    (in_tmp / "shopconf" / "__init__.py").write_text("")
    (in_tmp / "shopconf" / "gunicorn_conf.py").write_text("workers = 6\n")
    config = resolve(["-c", "python:shopconf.gunicorn_conf"], {})
    assert config.workers == 6
    assert config.sources["workers"] == f"{in_tmp / 'shopconf' / 'gunicorn_conf.py'} line 1"
    assert resolve(["-c", "file:shopconf/gunicorn_conf.py"], {}).workers == 6
    with pytest.raises(UsageError, match=r"^config python:no_such_conf: no module named 'no_such_conf'"):
        resolve(["-c", "python:no_such_conf"], {})


def test_every_helper_variable_is_named_in_one_line(in_tmp):
    (in_tmp / "gunicorn.conf.py").write_text(
        "import multiprocessing\ncores = multiprocessing.cpu_count()\nhost = '0.0.0.0'\n"
        "bind = f'{host}:8000'\nworkers = cores * 2\nwrokers = 3\n"
    )
    with pytest.raises(UsageError) as error:
        resolve([], {})
    assert str(error.value) == (
        "unknown setting 'cores' in gunicorn.conf.py line 2 (prefix helper names with '_'); "
        "also unknown: 'host' line 3, 'wrokers' line 6"
    )


def test_answer_table_dataclasses_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ANSWERS["spew"].line = "x"  # type: ignore[misc]
    assert isinstance(build_parser(), argparse.ArgumentParser)
