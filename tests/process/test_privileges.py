"""Running workers as another user: names and ids resolved at start, refusals phrased for the
user. Workers really switching (and reopening their logs) is in tests/master/test_process_model.py."""

from __future__ import annotations

import os

import pytest

from forkserve.process import privileges
from forkserve.settings.registry import defaults

# -- user / group ------------------------------------------------------------------------------


def _config(user=None, group=None):
    config = defaults()
    config.set("user", user, "test")
    config.set("group", group, "test")
    return config


def test_resolve_identity_from_names_and_ids():
    assert privileges.resolve(_config()) is None
    if os.geteuid() != 0:
        with pytest.raises(privileges.PrivilegeError, match="need the master to run as root"):
            privileges.resolve(_config("nobody"))
        return
    nobody = privileges.resolve(_config("nobody"))
    assert nobody is not None and (nobody.uid, nobody.username) == (65534, "nobody")
    assert nobody.gid == 65534  # nobody's primary group, not the master's
    assert privileges.resolve(_config(65534, "nogroup")) == privileges.Identity(65534, 65534, "nobody")
    assert privileges.resolve(_config(None, 65534)) == privileges.Identity(0, 65534, None)


def test_resolve_refuses_unknown_names_and_a_bare_uid_without_group():
    with pytest.raises(privileges.PrivilegeError, match="no such user 'no-such-user-fs'"):
        privileges.resolve(_config("no-such-user-fs"))
    with pytest.raises(privileges.PrivilegeError, match="no such group 'no-such-group-fs'"):
        privileges.resolve(_config(None, "no-such-group-fs"))
    with pytest.raises(privileges.PrivilegeError, match="set 'group' too"):
        privileges.resolve(_config(54321))
