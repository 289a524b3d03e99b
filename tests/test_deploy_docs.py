"""README's deployment documentation checked against the code it describes.

The migration guide's claims are checked against both settings registries (forkserve's and the
installed gunicorn's), the signals table against the signals the master handles, and the list
of shipped files against conf/.
"""

from __future__ import annotations

import re

import gunicorn
import gunicorn.config
from conftest import ROOT

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


def test_migration_same_settings_are_really_the_same():
    migration = section("Migrating from gunicorn")
    same = names_in(migration.split("**Same name, same flags, same meaning:**", 1)[1].split("**", 1)[0])
    assert len(same) > 40
    for name in sorted(same):
        assert name in SETTINGS and name in GUNICORN, name
        assert SETTINGS[name].flags == tuple(GUNICORN[name].cli or ()), name


def test_migration_guide_names_every_forkserve_setting_and_only_real_gunicorn_ones():
    migration = section("Migrating from gunicorn")
    mentioned = names_in(migration)
    assert set(SETTINGS) <= mentioned, sorted(set(SETTINGS) - mentioned)
    gunicorn_table = migration.split("**gunicorn only**", 1)[1]
    gunicorn_only = {name for cell in re.findall(r"^\| ([^|]+) \|", gunicorn_table, re.MULTILINE)
                     for name in names_in(cell)}
    assert len(gunicorn_only) > 40
    for name in gunicorn_only:
        if "*" in name:
            prefix = name.rstrip("*")
            assert any(known.startswith(prefix) for known in GUNICORN), name
            assert not any(known.startswith(prefix) for known in SETTINGS), name
        else:
            assert name not in SETTINGS, f"{name} exists in forkserve"
    different = migration.split("**Same name, different behaviour:**", 1)[1].split("**forkserve only:**", 1)[0]
    for row in re.findall(r"^\| `(\w+)` \|", different, re.MULTILINE):
        assert row in SETTINGS and row in GUNICORN, row


def test_migration_guide_covers_every_setting_of_the_installed_gunicorn():
    mentioned = names_in(section("Migrating from gunicorn"))
    prefixes = tuple(name.rstrip("*") for name in mentioned if name.endswith("*"))
    missing = sorted(name for name in GUNICORN if name not in mentioned and not name.startswith(prefixes))
    assert not missing, f"gunicorn {gunicorn.__version__} has settings README's migration guide omits: {missing}"


def test_signals_table_lists_exactly_the_signals_the_master_handles():
    table = section("Signals")
    rows = re.findall(r"^\| (`[A-Z0-9]+`(?:, `[A-Z0-9]+`)*) \|", table, re.MULTILINE)
    documented = {f"SIG{name}" for row in rows for name in re.findall(r"`([A-Z0-9]+)`", row)}
    assert documented == set(HANDLED_SIGNALS)


def test_deployment_section_lists_every_file_in_conf():
    deployment = section("Deployment")
    listed = set(re.findall(r"`conf/([\w./]+)`", deployment))
    conf = ROOT / "conf"
    assert listed == {str(path.relative_to(conf)) for path in conf.rglob("*") if path.is_file()}
