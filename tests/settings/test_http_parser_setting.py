"""The http_parser setting: forkserve's words and gunicorn's for the same choice, and a one-line
config error (exit 2, no traceback) when httptools is asked for and does not import.

"Not installed" is simulated for real: forkserve runs in a subprocess whose import of httptools
fails (``sys.modules['httptools'] = None``), nothing of forkserve's is mocked.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, run_forkserve

from forkserve.settings.gunicorn_compat import DIFFERENT, SHARED, http_parser
from forkserve.settings.resolve import build_parser, resolve

APP = "demo.wsgi:application"
FIX = "pip install 'forkserve[fast]'"


@pytest.mark.parametrize(("given", "parser"), [
    ("h11", "h11"), ("H11 ", "h11"), ("httptools", "httptools"), ("auto", "auto"),
    ("python", "h11"), ("fast", "httptools"), ("FAST", "httptools"), (None, "auto"),  # gunicorn's words
])
def test_forkserves_and_gunicorns_words(given, parser):
    assert http_parser(given) == parser


@pytest.mark.parametrize("given", ["picohttpparser", "", 1, True])
def test_other_values_are_refused_with_the_choices(given):
    with pytest.raises(ValueError, match=r"^expected one of h11, httptools, auto \(gunicorn's python, fast\)"):
        http_parser(given)


def test_the_flag_is_forkserves_own_and_print_config_names_gunicorns_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "--http-parser" in build_parser().format_help()
    assert resolve([], {}).http_parser == "h11"
    config = resolve(["--http-parser", "fast"], {})
    assert (config.http_parser, config.sources["http_parser"]) == ("httptools", "command line, gunicorn's 'fast'")
    (tmp_path / "gunicorn.conf.py").write_text("http_parser = 'python'\n")
    assert resolve([], {}).sources["http_parser"] == "gunicorn.conf.py line 1, gunicorn's 'python'"
    assert SHARED["http_parser"].status == DIFFERENT


def without_httptools(*args: str, cwd=ROOT) -> subprocess.CompletedProcess[str]:
    """``python -m forkserve ARGS`` in a process where ``import httptools`` fails."""
    code = ("import runpy, sys\nsys.modules['httptools'] = None\n"
            f"sys.argv = ['forkserve', *{list(args)!r}]\n"
            "runpy.run_module('forkserve', run_name='__main__', alter_sys=True)\n")
    env = {key: value for key, value in os.environ.items() if key not in ("FORKSERVE_CMD_ARGS", "GUNICORN_CMD_ARGS")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_httptools_without_httptools_is_a_one_line_config_error(tmp_path):
    result = without_httptools("--http-parser", "httptools", APP)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "forkserve: error: setting 'http_parser' = 'httptools': httptools cannot be imported (import of "
        f"httptools halted; None in sys.modules): {FIX} (from command line)\n"
    )
    (tmp_path / "gunicorn.conf.py").write_text("workers = 2\nhttp_parser = 'fast'\n")
    checked = without_httptools("--check-config", APP, cwd=tmp_path)
    assert checked.returncode == 2 and "Traceback" not in checked.stderr
    assert checked.stderr.startswith("forkserve: error: setting 'http_parser' = 'fast': httptools cannot be imported")
    assert checked.stderr.endswith(f"{FIX} (in gunicorn.conf.py line 2)\n") and checked.stderr.count("\n") == 1


def test_auto_without_httptools_is_no_error(tmp_path):
    result = without_httptools("--http-parser", "auto", "--check-config", APP)
    assert result.returncode == 0, result.stderr
    assert run_forkserve("--http-parser", "httptools", "--check-config", APP).returncode == 0
