"""The shape of the package: folders by role, each importing only those below it.

cli.py > master/ > worker/ | stats/ > process/ > http/ > settings/ (README "Architecture").
The import order itself is import-linter's contracts in pyproject.toml; these tests run them and
check what they cannot: what sits at the top of the package, how large a file or class may grow,
that package ``__init__`` files import nothing, and what the HTTP layer costs to import.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

PACKAGE = ROOT / "forkserve"
ROLES = ("master", "worker", "stats", "process", "http", "settings")
TOP_FILES = {"__init__.py", "__main__.py", "cli.py"}
MAX_FILE_LINES = 500
MAX_CLASS_LINES = 450


def _sources() -> list:
    return sorted(path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)


def test_the_package_top_holds_only_the_entry_points_and_the_role_folders():
    entries = {path.name for path in PACKAGE.iterdir() if path.name != "__pycache__"}
    assert entries == TOP_FILES | set(ROLES)
    for role in ROLES:
        assert (PACKAGE / role / "__init__.py").is_file(), role


def test_no_file_over_500_lines_and_no_class_over_450():
    too_long = []
    for path in _sources():
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_long.append(f"{path.relative_to(ROOT)}: class {node.name} "
                                f"{node.end_lineno - node.lineno + 1} lines")
    assert not too_long


def test_package_init_files_state_their_rule_and_import_nothing():
    for path in [PACKAGE / "__init__.py", *(PACKAGE / role / "__init__.py" for role in ROLES)]:
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), path
        imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert not imports, f"{path.relative_to(ROOT)} imports: every worker would pay for it"


def test_import_contracts_hold():
    """pyproject.toml [tool.importlinter]: the layer order, no cycles between siblings, and an
    HTTP layer that imports nothing from the process side."""
    command = shutil.which("lint-imports")
    if command is None:
        pytest.fail("lint-imports not found: install the test extra (pip install -e '.[test]')")
    completed = subprocess.run([command], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "0 broken" in completed.stdout


def test_the_http_layer_loads_nothing_from_the_process_side():
    completed = _python(
        "import sys, forkserve.http.connection; print(sorted(m for m in sys.modules if m.startswith('forkserve.') "
        "and not m.startswith(('forkserve.http','forkserve.settings'))))"
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_each_role_folder_has_its_tests_in_a_folder_of_the_same_name():
    for role in ROLES:
        assert list((ROOT / "tests" / role).glob("test_*.py")), f"tests/{role}/ holds no tests"
