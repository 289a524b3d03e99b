"""Finding and importing the WSGI application: ``module:attr`` and ``module:factory()``.

The error a user sees must say which of three things went wrong — the module is not there, the
attribute is not there, or the user's own code raised while importing — and only in the last case
is a traceback useful, and then only the frames from the user's code.
"""

from __future__ import annotations

import ast
import importlib
import os
import site
import sys
import traceback
from collections.abc import Callable
from typing import Any

import forkserve
from forkserve.settings.registry import Config


class AppLoadError(Exception):
    """The app could not be loaded; the message is ready to show the user (may be multi-line)."""


def prepare_import_path(config: Config) -> None:
    """Apply ``chdir`` and ``pythonpath`` so the app's modules import as the user expects."""
    if config.chdir:
        try:
            os.chdir(config.chdir)
        except OSError as error:
            raise AppLoadError(f"cannot chdir to {config.chdir}: {error.strerror}") from None
    for directory in reversed((config.pythonpath or "").split(",")):
        directory = directory.strip()
        if directory:
            sys.path.insert(0, os.path.abspath(directory))
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def library_roots() -> tuple[str, ...]:
    """Directories whose modules are not the app's own code, each ending in a separator: the
    standard library, installed packages (site-packages, the user's too) and forkserve itself.

    ``--reload`` watches only the app's files and a preload HUP re-imports only the app's
    modules, so forkserve must count as library. Its directory is taken from the package
    (``forkserve.__file__``), not from where this module sits in it.
    """
    import sysconfig  # only for --reload / a preload reload: keep it out of every worker

    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    roots.add(os.path.dirname(os.path.abspath(forkserve.__file__)))
    return tuple(os.path.join(os.path.realpath(root), "") for root in roots if root)


def parse_app_spec(spec: str) -> tuple[str, str, bool]:
    """Split 'pkg.mod:attr' / 'pkg.mod:factory()' into (module, attribute, is_call)."""
    module, _, attribute = spec.partition(":")
    attribute = attribute.strip() or "application"
    is_call = False
    if attribute.endswith(")"):
        try:
            expression = ast.parse(attribute, mode="eval").body
        except SyntaxError:
            raise AppLoadError(f"cannot parse app spec '{spec}'") from None
        if not isinstance(expression, ast.Call) or expression.args or expression.keywords:
            raise AppLoadError(f"app spec '{spec}': only a call without arguments, like factory(), is supported")
        if not isinstance(expression.func, ast.Name):
            raise AppLoadError(f"app spec '{spec}': the factory must be a plain name")
        attribute, is_call = expression.func.id, True
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise AppLoadError(f"app spec '{spec}' must look like module:attr, e.g. demo.wsgi:application")
    if not attribute.isidentifier():
        raise AppLoadError(f"app spec '{spec}': '{attribute}' is not a valid attribute name")
    return module, attribute, is_call


def _user_traceback(error: BaseException) -> str:
    """The traceback without forkserve's and importlib's own frames."""
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if "importlib" not in frame.filename and os.sep + "forkserve" + os.sep not in frame.filename
    ]
    text = "".join(traceback.format_list(frames))
    text += "".join(traceback.format_exception_only(type(error), error))
    return "Traceback (most recent call last):\n" + text


def load_app(spec: str) -> Callable[..., Any]:
    """Import the app named by ``spec``; raise AppLoadError with a message for the user."""
    module_name, attribute, is_call = parse_app_spec(spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise AppLoadError(
                f"no module named '{error.name}' (looking for app '{spec}' from {os.getcwd()})"
            ) from None
        raise AppLoadError(f"error while importing '{module_name}':\n{_user_traceback(error)}") from None
    except Exception as error:  # noqa: BLE001 -- whatever the app's import raises is reported
        raise AppLoadError(f"error while importing '{module_name}':\n{_user_traceback(error)}") from None
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise AppLoadError(f"module '{module_name}' has no attribute '{attribute}'") from None
    if is_call:
        try:
            target = target()
        except Exception as error:  # noqa: BLE001 -- whatever the factory raises is reported
            raise AppLoadError(f"error while calling '{spec}':\n{_user_traceback(error)}") from None
    if not callable(target):
        raise AppLoadError(f"'{spec}' is not callable (got {type(target).__name__})")
    return target
