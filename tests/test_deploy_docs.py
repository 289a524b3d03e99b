"""README's deployment documentation checked against the code it describes.

The migration guide's table (generated from forkserve/settings/gunicorn_compat.py) is checked
against both settings registries (forkserve's and the installed gunicorn's), its example answers
against what forkserve prints, the signals table against the signals the master handles, and the list
of shipped files against conf/.
"""

from __future__ import annotations

import re
import shlex

import gunicorn
import gunicorn.config
from conftest import ROOT, run_forkserve

from forkserve.master.arbiter import HANDLED_SIGNALS
from forkserve.settings.registry import SETTINGS

README = (ROOT / "README.md").read_text()
GUNICORN = {setting.name: setting for setting in gunicorn.config.KNOWN_SETTINGS}


def section(title: str) -> str:
    """The text of a '## title' section, up to the next '## ' heading."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def names_in(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_0-9*]+)`", text))


def test_quick_start_keeps_its_two_commands():
    quick = section("Quick start")
    assert "pip install -e '.[test]' && forkserve -w 4 -b 127.0.0.1:8000 demo.wsgi:application" in quick
    assert "pip install -e '.[test]' && python -m pytest" in quick


def migration_rows() -> dict[str, str]:
    """{gunicorn setting: forkserve's answer} from the migration guide's (generated) table."""
    table = section("Migrating from gunicorn").split("| gunicorn setting | flags | forkserve |", 1)[1]
    return dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| (.+) \|$", table, re.MULTILINE))


def test_migration_table_answers_every_setting_of_the_installed_gunicorn():
    rows = migration_rows()
    missing = sorted(set(GUNICORN) - set(rows))
    assert not missing, f"gunicorn {gunicorn.__version__} has settings README's migration table omits: {missing}"
    assert set(rows) == set(GUNICORN)
    for name, answer in rows.items():
        assert answer.startswith(("same", "mapped: ", "different: ", "not yet: ", "no: ")), name
        if answer.startswith(("same", "mapped", "different")):
            assert name in SETTINGS, f"{name}: the table says forkserve has it"
        else:
            assert name not in SETTINGS, f"{name} exists in forkserve, but the table answers it"


def test_migration_same_rows_are_really_the_same():
    same = [name for name, answer in migration_rows().items() if answer.split(":")[0] == "same"]
    assert len(same) > 25
    for name in same:
        assert set(GUNICORN[name].cli or ()) <= set(SETTINGS[name].flags), name


def test_migration_guide_names_every_forkserve_setting():
    mentioned = names_in(section("Migrating from gunicorn"))
    assert set(SETTINGS) <= mentioned, sorted(set(SETTINGS) - mentioned)


def test_migration_guide_examples_are_what_forkserve_prints(tmp_path):
    """The guide's example answers: each '$ forkserve ARGS' line, run, prints the line after it."""
    examples = re.findall(r"^\$ forkserve (.+)\n(forkserve: error: .+)$", section("Migrating from gunicorn"),
                          re.MULTILINE)
    assert len(examples) >= 2
    for arguments, printed in examples:
        result = run_forkserve(*shlex.split(arguments), cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.strip() == printed, arguments


def test_signals_table_lists_exactly_the_signals_the_master_handles():
    table = section("Signals")
    rows = re.findall(r"^\| (`[A-Z0-9]+`(?:, `[A-Z0-9]+`)*) \|", table, re.MULTILINE)
    documented = {f"SIG{name}" for row in rows for name in re.findall(r"`([A-Z0-9]+)`", row)}
    assert documented == set(HANDLED_SIGNALS)


def test_deployment_section_lists_every_file_in_conf():
    deployment = section("Deployment")
    listed = set(re.findall(r"`conf/([\w./-]+)`", deployment))
    conf = ROOT / "conf"
    assert listed == {str(path.relative_to(conf)) for path in conf.rglob("*") if path.is_file()}
