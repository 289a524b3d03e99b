"""The rule for tests that need a system program: skipped with the install command on a
contributor's machine, failed under CI; and CI installs every program the tests ask for."""

from __future__ import annotations

import re

import pytest
import system_programs
from conftest import ROOT
from system_programs import PACKAGES, require_program

CI_RUN = (ROOT / ".ci" / "run").read_text()


@pytest.fixture
def missing_program(monkeypatch: pytest.MonkeyPatch) -> str:
    """A program that exists nowhere, registered with a package name."""
    monkeypatch.setitem(PACKAGES, "fsv-no-such-program", "fsv-no-such-package")
    monkeypatch.setattr(system_programs, "SBIN", ())
    return "fsv-no-such-program"


def test_a_missing_program_skips_locally_with_the_install_command(missing_program, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install it with 'sudo apt-get install fsv-no-such-package'"):
        require_program(missing_program)


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_a_missing_program_fails_under_ci(missing_program, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="fsv-no-such-program is not installed.*CI=true"):
        require_program(missing_program)


def test_ci_installs_every_program_the_tests_need_and_runs_them_as_ci():
    needed = dict(re.findall(r"^need (\S+) (\S+)", CI_RUN, re.MULTILINE))
    assert {program: needed.get(program) for program in PACKAGES} == PACKAGES
    export = CI_RUN.index("export CI=true")
    assert export < CI_RUN.index("python -m pytest")


def test_readme_states_the_rule_next_to_the_test_command():
    readme = (ROOT / "README.md").read_text()
    quick = readme[readme.index("## Quick start"):readme.index("## Running")]
    assert "skipped" in quick and "`CI=true`" in quick and "sudo apt-get install haproxy" in quick
    for program in PACKAGES:
        if program not in ("unshare", "ip"):
            assert program in quick, program
