"""The ``--reload`` watch: which files a worker watches and when it reports a change, and what
counts as forkserve's own code (never watched, never re-imported by a preload HUP). The reload
itself, end to end, is in tests/master/test_process_model.py."""

from __future__ import annotations

import importlib
import os
import sys

import forkserve
from forkserve.master.reload import is_app_module
from forkserve.process.loader import library_roots
from forkserve.worker.reloader import Reloader

# -- reload watch ------------------------------------------------------------------------------


def test_reloader_reports_a_changed_extra_file_and_a_created_one(tmp_path):
    watched, later = tmp_path / "settings.toml", tmp_path / "later.txt"
    watched.write_text("a")
    reloader = Reloader([str(watched), str(later)])
    assert reloader.changed() is None
    os.utime(watched, (1_000_000, 1_000_000))
    assert reloader.changed() == str(watched)
    reloader = Reloader([str(later)])
    assert reloader.changed() is None
    later.write_text("now")
    assert reloader.changed() == str(later)


def test_reloader_watches_app_modules_not_the_library():
    reloader = Reloader()
    files = reloader.watched()
    assert __file__ in files  # this test module is "the app" here
    assert not any(path.endswith(("/os.py", "/forkserve/worker/worker.py")) for path in files)
    assert not any("site-packages" in path for path in files)


def test_every_folder_of_forkserve_is_library_to_the_reloader_and_the_preload_reload():
    """--reload and a preload HUP tell forkserve's modules from the app's by the package's own
    directory, found from the package: no module of forkserve is app code, however deep it sits."""
    assert os.path.join(os.path.dirname(os.path.realpath(forkserve.__file__)), "") in library_roots()
    reloader = Reloader()
    for name in ("forkserve.cli", "forkserve.master.reload", "forkserve.worker.reloader",
                 "forkserve.http.connection", "forkserve.settings.docs"):
        module = importlib.import_module(name)
        assert not is_app_module(module) and not reloader.is_app_file(module.__file__), name
    assert is_app_module(sys.modules[__name__]) and reloader.is_app_file(__file__)  # the "app" here
