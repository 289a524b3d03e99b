"""HUP: the new configuration and app, and the new generation of workers that serves them.

:class:`Reload` re-resolves the settings (the config file re-read, the command line as at
start), sets the logs up afresh, and, if the app is preloaded, imports it again; any failure
there changes nothing and the current workers keep serving. Then the master's generation moves
on, and :meth:`Reload.advance`, once per loop turn, stops the old workers as the new ones are
ready: all at once (``reload_strategy = "all"``) or one at a time (``"rolling"``). New workers
that cannot boot make it :meth:`~Reload.abort`: back to the previous configuration and app.

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
import itertools
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from forkserve.process import logs
from forkserve.process.hooks import call_hook
from forkserve.process.loader import AppLoadError, library_roots, load_app, prepare_import_path
from forkserve.process.logs import error_log
from forkserve.settings.registry import Config
from forkserve.settings.resolve import UsageError, resolve
from forkserve.worker.tls import check_tls

if TYPE_CHECKING:
    from forkserve.master.events import Events
    from forkserve.master.fleet import Fleet
    from forkserve.master.lifecycle import MasterLifecycle


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


@dataclass
class ReloadState:
    """A HUP in progress: the new generation, and what to go back to if it cannot boot."""

    generation: int
    strategy: str
    previous_config: Config
    previous_app: Callable[..., Any] | None
    previous_generation: int
    previous_target: int
    previous_cwd: str


class Master(Protocol):
    """What a reload reads and changes on its master (the Arbiter: the ``server`` hooks see)."""

    config: Config
    app: Callable[..., Any] | None
    generation: int
    target_workers: int
    paused: bool
    launch_cwd: str
    lifecycle: MasterLifecycle
    fleet: Fleet
    events: Events

    def set_target(self, count: int) -> None:
        """Change the worker count (runs the ``nworkers_changed`` hook)."""


class Reload:
    """The master's HUP: at most one reload at a time; one more may be asked for meanwhile."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.state: ReloadState | None = None
        self.again = False  # a HUP came during this reload: reload again once it completes
        self.preloaded = PreloadedApp()
        self._generations = itertools.count(1)

    def start(self) -> None:
        """Re-read the configuration (and re-import a preloaded app); begin replacing workers.

        Any failure here leaves everything as it was: the current workers keep serving.
        """
        master = self.master
        if self.state is not None:
            error_log.info("HUP received during a reload: reloading again when this one completes")
            self.again = True
            return
        error_log.info("HUP received: reloading the configuration and the app")
        master.lifecycle.reloading()  # sd_notify RELOADING=1; READY=1 again once all workers are up
        old = master.config
        try:
            new = read_config(old.argv, master.launch_cwd)
        except UsageError as error:
            error_log.error("reload failed: %s; the current workers keep serving", error)
            return
        try:
            logs.setup(new)
        except (OSError, ValueError) as error:
            logs.setup(old)
            error_log.error("reload failed: cannot set up logging: %s; the current workers keep serving", error)
            return
        for warning in new.warnings:
            error_log.warning(warning)
        problem = check_tls(new)  # e.g. a renewed certificate that does not match its key
        if problem is not None:
            logs.setup(old)
            error_log.error("reload failed: %s; the current workers keep serving", problem)
            return
        previous_cwd = os.getcwd()
        try:
            os.chdir(master.launch_cwd)  # a relative chdir/pythonpath means what it meant at start
            prepare_import_path(new)
            app = self.preloaded.load(new.wsgi_app) if new.preload_app else None
        except AppLoadError as error:
            os.chdir(previous_cwd)
            logs.setup(old)
            error_log.error("reload failed: %s; the current workers keep serving", error)
            return
        if not new.preload_app:
            self.preloaded.unload()  # workers import the app themselves, afresh
        apply_raw_env(new)
        if new.bind != old.bind:
            error_log.warning("bind changed in the configuration: the listening sockets are kept; "
                              "use USR2 (upgrade) or a restart to change them")
        state = ReloadState(next(self._generations), new.reload_strategy, old, master.app,
                            master.generation, master.target_workers, previous_cwd)
        master.config, master.app, master.generation = new, app, state.generation
        self.state = state
        master.paused = False
        if new.workers != old.workers:  # changed in the file; otherwise keep TTIN/TTOU's count
            master.set_target(new.workers)
        call_hook(new, "on_reload", master)
        error_log.info("reload: starting %d new workers (%s)", master.target_workers, new.reload_strategy)

    def advance(self) -> None:
        """Once per loop turn during a reload: stop old workers as the new ones are ready."""
        state, fleet, target = self.state, self.master.fleet, self.master.target_workers
        assert state is not None
        new = fleet.serving()
        old = [record for record in fleet.workers.values()
               if record.generation != state.generation and record.stop_sent_at is None]
        if any(record.ready_at is None for record in new):
            return
        if state.strategy == "all":
            if len(new) >= target:
                for record in old:
                    fleet.stop(record, signal.SIGTERM)
                self.finish()
            return
        if old and len(new) + len(old) > target:
            oldest = min(old, key=lambda record: record.spawned_at)
            newest = max(new, key=lambda record: record.spawned_at)
            error_log.info("rolling reload: new worker %d is ready; stopping old worker %d (%d old left)",
                           newest.pid, oldest.pid, len(old) - 1)
            fleet.stop(oldest, signal.SIGTERM)
        elif len(new) < target:
            fleet.spawn_worker()
        elif not old:
            self.finish()

    def finish(self) -> None:
        error_log.info("reload complete: %d workers run the new configuration", len(self.master.fleet.serving()))
        self.state = None
        if self.again:
            self.again = False
            self.master.events.signals.append(signal.SIGHUP)

    def abort(self, why: str) -> None:
        """New workers cannot start: stop them, go back to the old configuration and app."""
        state, master = self.state, self.master
        assert state is not None
        self.state = None
        self.again = False
        for record in master.fleet.workers.values():
            if record.generation == state.generation and record.stop_sent_at is None:
                master.fleet.stop(record, signal.SIGTERM)
        master.config, master.app = state.previous_config, state.previous_app
        master.generation = state.previous_generation
        try:
            os.chdir(state.previous_cwd)
        except OSError as error:
            error_log.error("cannot go back to %s: %s", state.previous_cwd, error.strerror)
        if master.target_workers != state.previous_target:
            master.set_target(state.previous_target)
        try:
            logs.setup(master.config)
        except (OSError, ValueError) as error:
            error_log.error("cannot restore the previous logging: %s", error)
        error_log.error("reload failed: %s", why)
        error_log.error("reload abandoned: the previous workers keep serving")
