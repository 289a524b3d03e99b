"""Reading ``forkserve.conf.py``: a Python file whose top-level names are settings.

gunicorn silently ignores a name it does not know, so ``wrokers = 8`` runs with the default and
nobody notices. Here every public top-level name must be a setting (or one of gunicorn's, which
the caller answers); anything else is an error that names the file, the line and the closest
setting. Modules the file imports and names starting with ``_`` (helpers) are allowed.
"""

from __future__ import annotations

import ast
import traceback
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class ConfigFileError(Exception):
    """A problem in the user's config file, already phrased as one line for the user."""


def _bound_names(tree: ast.Module) -> tuple[dict[str, int], set[str]]:
    """Top-level names the file binds, with the line of the first binding, and the imported names.

    Statements nested in module-level ``if``/``try``/``with``/``for`` blocks count as top level,
    since they bind module globals too.
    """
    lines: dict[str, int] = {}
    imported: set[str] = set()

    def note(name: str, line: int) -> None:
        lines.setdefault(name, line)

    def targets(node: ast.AST, line: int) -> None:
        if isinstance(node, ast.Name):
            note(node.id, line)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                targets(element, line)
        elif isinstance(node, ast.Starred):
            targets(node.value, line)

    def walk(statements: Iterable[ast.stmt]) -> None:
        for statement in statements:
            if isinstance(statement, ast.Assign):
                for target in statement.targets:
                    targets(target, statement.lineno)
            elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)):
                targets(statement.target, statement.lineno)
            elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                note(statement.name, statement.lineno)
            elif isinstance(statement, (ast.Import, ast.ImportFrom)):
                for alias in statement.names:
                    imported.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(statement, (ast.For, ast.AsyncFor)):
                targets(statement.target, statement.lineno)
            elif isinstance(statement, (ast.With, ast.AsyncWith)):
                for item in statement.items:
                    if item.optional_vars is not None:
                        targets(item.optional_vars, statement.lineno)
            for child in ("body", "orelse", "finalbody"):
                walk(getattr(statement, child, []) or [])
            for handler in getattr(statement, "handlers", []) or []:
                walk(handler.body)

    walk(tree.body)
    return lines, imported


def _user_frame_line(error: BaseException, filename: str) -> int | None:
    """The line of the config file where ``error`` was raised, if it was raised there."""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename == filename:
            return frame.lineno
    return None


def locate(spec: str) -> Path:
    """The file a config spec names: a path, gunicorn's ``file:PATH``, or gunicorn's
    ``python:MODULE`` (found on sys.path with the current directory first, as gunicorn does), so a
    gunicorn command line's ``-c`` works as it is."""
    if spec.startswith("file:"):
        return Path(spec[len("file:"):])
    if not spec.startswith("python:"):
        return Path(spec)
    import importlib.util
    import os
    import sys

    module = spec[len("python:"):]
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as error:
        raise ConfigFileError(f"config {spec}: {error}") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    if found is None or not found.origin or not found.has_location:
        raise ConfigFileError(f"config {spec}: no module named '{module}' (looked in the current directory "
                              "and sys.path)")
    return Path(found.origin)


def read_config_file(path: str | Path, known: Iterable[str],
                     also: Iterable[str] = ()) -> dict[str, tuple[Any, int | None]]:
    """Execute the config file and return {name: (value, line)} for the settings it sets.

    ``also`` are names returned too but never suggested (gunicorn's settings that forkserve
    answers instead of having). Raises ConfigFileError, phrased for the user, for a missing file,
    a syntax error, an exception while executing it, or names that are neither: the first such
    name with its line and the closest setting, then every other one, so a gunicorn config file's
    helper variables all show up in one run.
    """
    path = Path(path)
    shown = str(path)
    try:
        source = path.read_text()
    except OSError as error:
        raise ConfigFileError(f"cannot read config file {shown}: {error.strerror or error}") from None
    try:
        tree = ast.parse(source, filename=shown)
        code = compile(tree, shown, "exec")
    except SyntaxError as error:
        raise ConfigFileError(f"syntax error in {shown} line {error.lineno}: {error.msg}") from None
    namespace: dict[str, Any] = {"__file__": str(path.resolve()), "__name__": "__config__"}
    try:
        exec(code, namespace)  # noqa: S102 -- the config file is Python by design, like gunicorn's
    except Exception as error:  # noqa: BLE001 -- the user's code: report where, in one line
        line = _user_frame_line(error, shown)
        where = f" line {line}" if line else ""
        raise ConfigFileError(f"error in {shown}{where}: {type(error).__name__}: {error}") from None

    known = set(known)
    accepted = known | set(also)
    lines, imported = _bound_names(tree)
    found: dict[str, tuple[Any, int | None]] = {}
    unknown: list[tuple[int, str]] = []
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        line = lines.get(name)
        if name not in accepted:
            if name in imported and line is None:
                continue  # 'from x import y': a helper, not an attempt at a setting
            unknown.append((line or 0, name))
            continue
        found[name] = (value, line)
    if unknown:
        raise ConfigFileError(_unknown_names(sorted(unknown), shown, known))
    return found


def _unknown_names(unknown: list[tuple[int, str]], shown: str, known: set[str]) -> str:
    """One line: the first unknown name, where it is and the closest setting; then the others."""
    import difflib  # only when there is a mistake to explain

    line, name = unknown[0]
    # 0.75: close enough for typos ('wrokers', 'timout', 'bnd'), not for gunicorn configs' helper
    # variables ('cores' is 0.67 from 'workers').
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    hint = f" — did you mean '{close[0]}'?" if close else " (prefix helper names with '_')"
    where = f" line {line}" if line else ""
    others = ", ".join(f"'{other}'" + (f" line {at}" if at else "") for at, other in unknown[1:])
    return f"unknown setting '{name}' in {shown}{where}{hint}" + (f"; also unknown: {others}" if others else "")
