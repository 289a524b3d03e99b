"""HUP: reading the new configuration, and importing a preloaded app afresh in the master.

Without ``preload_app`` the master never imports the app, so workers forked after a HUP import
the current code from disk by themselves. With it, the master holds the app's modules in
``sys.modules``; importing again would just return them. So the master remembers which modules
the app's import brought in that are the user's own code (not the standard library, not
installed packages, not forkserve), drops exactly those before importing again, and puts them
back if the new import fails, so a broken edit never takes the serving app away.

Installed packages are kept: re-importing a framework in the same process is not safe. A
framework with process-wide registries (Django's app registry) may therefore refuse the second
import; the reload then fails, is logged, and the old workers keep serving.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from forkserve.process.loader import AppLoadError, library_roots, load_app
from forkserve.settings.registry import Config
from forkserve.settings.resolve import resolve


def read_config(argv: Sequence[str], launch_cwd: str) -> Config:
    """Resolve the configuration again, as at start: same arguments, same working directory,
    the current environment and config file. Raises UsageError."""
    cwd = os.getcwd()
    os.chdir(launch_cwd)
    try:
        return resolve(argv, os.environ)
    finally:
        os.chdir(cwd)


def apply_raw_env(config: Config) -> None:
    """Put ``raw_env`` NAME=VALUE items into the environment workers inherit."""
    for item in config.raw_env:
        name, _, value = item.partition("=")
        os.environ[name] = value


def is_app_module(module: ModuleType | None, roots: tuple[str, ...] | None = None) -> bool:
    """Is this the user's own pure-Python code, safe to import again?"""
    filename = getattr(module, "__file__", None)
    if not filename or not filename.endswith((".py", ".pyc")):
        return False
    path = os.path.realpath(filename)
    return not path.startswith(roots or library_roots())


class PreloadedApp:
    """The app imported in the master, and the names of its own modules in ``sys.modules``."""

    def __init__(self) -> None:
        self.modules: dict[str, ModuleType] = {}

    def load(self, spec: str) -> Callable[..., Any]:
        """Import the app afresh. On failure ``sys.modules`` is as before and AppLoadError raised."""
        saved = self.unload()
        importlib.invalidate_caches()
        before = set(sys.modules)
        roots = library_roots()
        try:
            try:
                app = load_app(spec)
            except SystemExit as error:
                raise AppLoadError(f"importing '{spec}' called sys.exit({error.code!r})") from None
        except AppLoadError:
            for name in set(sys.modules) - before:
                if is_app_module(sys.modules.get(name), roots):
                    del sys.modules[name]
            sys.modules.update(saved)
            self.modules = saved
            raise
        self.modules = {
            name: sys.modules[name]
            for name in set(sys.modules) - before
            if is_app_module(sys.modules.get(name), roots)
        }
        return app

    def unload(self) -> dict[str, ModuleType]:
        """Drop the app's own modules from ``sys.modules``; return them (to restore on failure)."""
        saved = {name: module for name in self.modules if (module := sys.modules.pop(name, None))}
        self.modules = {}
        return saved
