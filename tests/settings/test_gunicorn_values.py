"""gunicorn's spellings of setting values: accepted where they mean what forkserve's do, refused
with the exact replacement where they would silently mean something else."""

from __future__ import annotations

import pytest

from forkserve.settings import validators as v
from forkserve.settings.registry import SETTINGS, Config


def _set(name: str, value: object) -> object:
    config = Config()
    config.set(name, value, "test")
    return config.values[name]


def test_post_request_may_take_two_three_or_four_arguments_as_in_gunicorn():
    seen = []

    def two(worker, req):
        seen.append(("two", worker, req))

    def three(worker, req, environ):
        seen.append(("three", worker, req, environ))

    def four(worker, req, environ, resp):
        seen.append(("four", worker, req, environ, resp))

    for function in (two, three, four):
        hook = _set("post_request", function)
        hook("w", "r", "e", "p")  # the worker always calls it with four
        assert hook.__name__ == function.__name__  # --print-config shows the user's function
    assert seen == [("two", "w", "r"), ("three", "w", "r", "e"), ("four", "w", "r", "e", "p")]

    def one(worker):
        pass

    with pytest.raises(ValueError, match=r"setting 'post_request' expected a function taking 2 or 3 or 4"):
        _set("post_request", one)
    with pytest.raises(ValueError, match=r"setting 'post_fork' expected a function taking 2 argument"):
        _set("post_fork", one)


def test_hooks_may_be_dotted_paths_as_in_gunicorn():
    assert _set("on_exit", "os.fspath") is __import__("os").fspath
    assert _set("post_fork", "operator.add").__name__ == "add"
    with pytest.raises(ValueError, match=r"setting 'on_exit' cannot import 'no_such_module.hook'"):
        _set("on_exit", "no_such_module.hook")
    with pytest.raises(ValueError, match=r"setting 'on_exit' module 'os' has no 'no_such_function'"):
        _set("on_exit", "os.no_such_function")
    with pytest.raises(ValueError, match=r"expected a function or a dotted path"):
        _set("on_exit", "nodots")


def test_sendfile_none_is_gunicorns_default_and_means_on():
    assert _set("sendfile", None) is True
    assert _set("sendfile", False) is False
    config = Config()
    config.set("sendfile", None, "gunicorn.conf.py line 4")
    assert config.sources["sendfile"] == "gunicorn.conf.py line 4, gunicorn's None"


@pytest.mark.parametrize(("given", "mask"), [(0, 0), (0o22, 0o22), ("0", 0), ("7", 7), ("022", 0o22),
                                             ("0o22", 0o22), ("0x12", 0o22), ("0o007", 0o7)])
def test_umask_spellings_both_servers_read_alike(given, mask):
    assert _set("umask", given) == mask


def test_umask_digits_gunicorn_reads_as_decimal_are_refused_with_both_readings():
    with pytest.raises(ValueError) as error:
        _set("umask", "22")
    assert str(error.value) == (
        "setting 'umask' = '22' is ambiguous: gunicorn reads it as decimal (0o26), the shell's umask as "
        "octal (0o22); write 0o26 or 022"
    )
    with pytest.raises(ValueError) as error:
        _set("umask", "18")
    assert str(error.value) == "setting 'umask' = '18' is decimal, as gunicorn reads it: write 0o22 (or 022)"


def test_reload_extra_files_patterns_are_refused_with_the_glob_replacement():
    assert _set("reload_extra_files", ["templates/base.html"]) == ["templates/base.html"]
    with pytest.raises(ValueError) as error:
        _set("reload_extra_files", ["app.py", "templates/**/*.html"])
    assert str(error.value) == (
        "setting 'reload_extra_files' = 'templates/**/*.html' is a pattern; forkserve watches files: in the "
        "config file write reload_extra_files = glob.glob('templates/**/*.html', recursive=True)"
    )


def test_boolean_or_none_validator():
    convert = v.boolean_or_none(True)
    assert (convert(None), convert("false"), convert(True)) == (True, False, True)
    assert SETTINGS["sendfile"].validator(None) is True
