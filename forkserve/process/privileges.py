"""Running workers as another user: names resolved at start, privileges dropped after fork.

The master keeps its identity (usually root): it binds privileged ports, writes the pid file and
reopens log files. Each worker gives up root right after fork, before it imports the app, so the
app's code never runs privileged. The order is the one that works: supplementary groups first,
then the group, then the user (after setuid there is no right left to change groups).

Files a worker must reopen itself after logrotate (the log files) and unix socket files are
handed to the workers' user, as gunicorn does, so USR1 works after the drop.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass

from forkserve.process.logs import error_log
from forkserve.settings.registry import Config


class PrivilegeError(Exception):
    """The user or group cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class Identity:
    """Who the workers run as. ``username`` is set when known, for the supplementary groups."""

    uid: int
    gid: int
    username: str | None

    def describe(self) -> str:
        return f"{self.username or self.uid} (uid {self.uid}, gid {self.gid})"


def _lookup_user(user: int | str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    except KeyError:
        if isinstance(user, int):
            return None  # a bare uid need not be in the password database (containers)
        raise PrivilegeError(f"setting 'user': no such user '{user}'") from None


def _lookup_group(group: int | str) -> int:
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise PrivilegeError(f"setting 'group': no such group '{group}'") from None


def resolve(config: Config) -> Identity | None:
    """The identity workers take from ``user``/``group``, or None to keep the master's.

    Raises PrivilegeError for an unknown name, a bare uid without a group to go with it, or a
    change that needs root while the master is not root.
    """
    user, group = config.user, config.group
    if user is None and group is None:
        return None
    entry = _lookup_user(user) if user is not None else None
    uid = entry.pw_uid if entry else (user if isinstance(user, int) else os.geteuid())
    if group is not None:
        gid = _lookup_group(group)
    elif entry is not None:
        gid = entry.pw_gid
    else:
        raise PrivilegeError(
            f"setting 'user': uid {user} is not in the password database, so its group is unknown; "
            "set 'group' too"
        )
    identity = Identity(uid, gid, entry.pw_name if entry else None)
    if os.geteuid() != 0 and (uid, gid) != (os.geteuid(), os.getegid()):
        raise PrivilegeError(
            f"settings 'user'/'group' need the master to run as root to switch workers to "
            f"{identity.describe()} (running as uid {os.geteuid()})"
        )
    return identity


def drop(identity: Identity | None) -> None:
    """In a fresh worker: become ``identity`` for good. Raises PrivilegeError if the kernel says no."""
    if identity is None:
        return
    try:
        if os.geteuid() == 0:
            if identity.username is not None:
                os.initgroups(identity.username, identity.gid)
            else:
                os.setgroups([identity.gid])
        if os.getgid() != identity.gid or os.getegid() != identity.gid:
            os.setgid(identity.gid)
        if os.getuid() != identity.uid or os.geteuid() != identity.uid:
            os.setuid(identity.uid)
    except OSError as error:
        raise PrivilegeError(f"cannot switch the worker to {identity.describe()}: {error.strerror}") from None


def log_files(loggers: Iterable[logging.Logger]) -> list[str]:
    """The files the given loggers write to (their FileHandlers), which workers reopen on USR1."""
    return [
        handler.baseFilename
        for logger in loggers
        for handler in logger.handlers
        if isinstance(handler, logging.FileHandler)
    ]


def hand_over(paths: Iterable[str], identity: Identity | None) -> None:
    """Give files to the workers' identity so they can reopen them (in the master, as root)."""
    if identity is None or os.geteuid() != 0:
        return
    for path in paths:
        try:
            os.chown(path, identity.uid, identity.gid)
        except FileNotFoundError:
            continue
        except OSError as error:
            error_log.warning("cannot give %s to %s: %s", path, identity.describe(), error.strerror)
