"""Resolving the settings from every source, and the command line parser that is one of them.

Every flag, its help text and its section come from :mod:`forkserve.settings.registry`; nothing
about a setting is written here. Values are validated by the registry's validators, not
argparse's, so a bad value reads the same whether it came from a flag, ``FORKSERVE_CMD_ARGS`` or
the config file.

The master resolves again on HUP (the config file re-read, the command line as at start), which
is why this lives here and not in :mod:`forkserve.cli`: the master never imports the command line.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from forkserve import __version__
from forkserve.settings.configfile import ConfigFileError, locate, read_config_file
from forkserve.settings.gunicorn_compat import ANSWERS, SHARED, answer_for, hidden_flags, judge
from forkserve.settings.registry import SECTIONS, SETTINGS, Config, defaults, format_value

DEFAULT_CONFIG_FILE = "forkserve.conf.py"
GUNICORN_CONFIG_FILE = "gunicorn.conf.py"  # read when there is no forkserve.conf.py: rename the command, done


class UsageError(Exception):
    """A user error in the command line, the environment or the config file: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, naming where the arguments came from."""

    def __init__(self, *args: Any, origin: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.origin = origin

    def error(self, message: str) -> NoReturn:
        prefix = f"{self.origin}: " if self.origin else ""
        raise UsageError(prefix + message)


def build_parser(origin: str = "") -> argparse.ArgumentParser:
    """The argparse parser, one option per registry entry that has flags, grouped by section."""
    parser = _Parser(
        prog="forkserve",
        origin=origin,
        usage="forkserve [OPTIONS] APP   (e.g. forkserve -w 4 -b 127.0.0.1:8000 demo.wsgi:application)",
        description="A preforking WSGI server: a master process and N synchronous h11 workers.",
        epilog="Also: 'forkserve top' for a live view of a running server's stats endpoint. "
        "Settings without flags (hooks, logconfig_dict) are set in forkserve.conf.py.",
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"forkserve {__version__}")
    groups = {section: parser.add_argument_group(section) for section in SECTIONS}
    for setting in SETTINGS.values():
        group = groups[setting.section]
        help_text = f"{setting.help_text} (default: {setting.default_text()})".replace("%", "%%")
        if setting.name == "wsgi_app":
            group.add_argument("wsgi_app", nargs="?", metavar=setting.metavar, help=help_text)
        elif not setting.flags:
            continue
        elif setting.kind == "flag":
            # A switch spelled as a negation (gunicorn's --no-control-socket) has no opposite.
            action: Any = "store_true" if setting.name in ("check_config", "print_config") or (
                setting.flags[0].startswith("--no-")) else argparse.BooleanOptionalAction
            group.add_argument(*setting.flags, dest=setting.name, action=action, help=help_text)
        elif setting.kind == "list":
            group.add_argument(
                *setting.flags, dest=setting.name, action="append", metavar=setting.metavar, help=help_text
            )
        elif setting.kind == "optional":
            group.add_argument(*setting.flags, dest=setting.name, nargs="?", const=setting.const,
                               metavar=setting.metavar, help=help_text)
        else:
            group.add_argument(*setting.flags, dest=setting.name, metavar=setting.metavar, help=help_text)
        for alias in SHARED[setting.name].aliases if setting.name in SHARED else ():
            group.add_argument(alias, dest=setting.name, metavar=setting.metavar, help=argparse.SUPPRESS)
    _add_gunicorn_flags(parser)
    return parser


def _add_gunicorn_flags(parser: argparse.ArgumentParser) -> None:
    """gunicorn's flags for settings forkserve does not have, hidden from --help: recognised so
    that the answer (what to use instead) replaces argparse's 'unrecognized arguments'."""
    for name, answer in hidden_flags(SETTINGS).items():
        if answer.takes == "flag":
            parser.add_argument(*answer.flags, dest=name, action="store_true", help=argparse.SUPPRESS)
        elif answer.takes == "list":
            parser.add_argument(*answer.flags, dest=name, action="append", help=argparse.SUPPRESS)
        elif answer.takes == "optional":
            parser.add_argument(*answer.flags, dest=name, nargs="?", const=answer.const, help=argparse.SUPPRESS)
        else:
            parser.add_argument(*answer.flags, dest=name, help=argparse.SUPPRESS)


def _apply(config: Config, values: Mapping[str, Any], source: str) -> None:
    for name, value in values.items():
        try:
            config.set(name, value, source)
        except ValueError as error:
            raise UsageError(f"{error} (from {source})") from None


def _gunicorn_only(config: Config, name: str, value: Any, where: str, refusal: str) -> None:
    """A gunicorn setting forkserve does not have: refused with its one-line answer, unless the
    value asks for nothing (gunicorn's default, or a setting gunicorn itself ignores here), which
    is noted (--print-config) or, when a real value goes unused, warned about at start."""
    answer = ANSWERS[name]
    accepted, text = judge(answer, value)
    if not accepted:
        raise UsageError(f"{refusal} {text}")
    if answer.ignored:
        config.warnings.append(f"gunicorn setting '{name}' ({where}) ignored: {text}; {answer.line}")
    else:
        config.notes.append(f"gunicorn setting '{name}' = {format_value(value)} ({where}) ignored: {text}")


def _split_gunicorn(config: Config, parsed: dict[str, Any], origin: str) -> dict[str, Any]:
    """The parsed command line without gunicorn's answered flags, each judged on the way out."""
    for name in [name for name in parsed if answer_for(name, SETTINGS)]:
        flag = ANSWERS[name].flags[0]
        prefix = f"{origin}: " if origin != "command line" else ""
        _gunicorn_only(config, name, parsed.pop(name), origin, f"{prefix}{flag} (gunicorn's '{name}')")
    return parsed


def _config_path(command_line: Mapping[str, Any], env_args: Mapping[str, Any], config: Config) -> str | None:
    """The config file named (-c, or in the CMD_ARGS variable), else ./forkserve.conf.py, else
    ./gunicorn.conf.py, which gunicorn reads by default."""
    path = command_line.get("config") or env_args.get("config")
    if path is not None:
        return path
    if Path(DEFAULT_CONFIG_FILE).is_file():
        if Path(GUNICORN_CONFIG_FILE).is_file():
            config.notes.append(f"./{GUNICORN_CONFIG_FILE} is not read: ./{DEFAULT_CONFIG_FILE} is")
        return DEFAULT_CONFIG_FILE
    return GUNICORN_CONFIG_FILE if Path(GUNICORN_CONFIG_FILE).is_file() else None


def _cmd_args_variable(environ: Mapping[str, str], config: Config) -> str:
    """FORKSERVE_CMD_ARGS, or gunicorn's GUNICORN_CMD_ARGS when only that one is set."""
    if "GUNICORN_CMD_ARGS" in environ:
        if "FORKSERVE_CMD_ARGS" not in environ:
            return "GUNICORN_CMD_ARGS"
        config.warnings.append("GUNICORN_CMD_ARGS is ignored: FORKSERVE_CMD_ARGS is set")
    return "FORKSERVE_CMD_ARGS"


def resolve(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Resolve every setting from all sources, lowest precedence first. Raises UsageError."""
    config = defaults()
    config.argv = list(argv)
    command_line = _split_gunicorn(config, vars(build_parser().parse_args(list(argv))), "command line")
    variable = _cmd_args_variable(environ, config)
    try:
        env_words = shlex.split(environ.get(variable, ""))
    except ValueError as error:
        raise UsageError(f"{variable}: {error}") from None
    env_args = _split_gunicorn(config, vars(build_parser(origin=variable).parse_args(env_words)), variable)

    if "WEB_CONCURRENCY" in environ:
        _apply(config, {"workers": environ["WEB_CONCURRENCY"]}, "environment WEB_CONCURRENCY")
    if "PORT" in environ:
        port = environ["PORT"].strip()
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"environment PORT must be a port number, got '{environ['PORT']}'")
        _apply(config, {"bind": [f"0.0.0.0:{port}"]}, "environment PORT")

    path = _config_path(command_line, env_args, config)
    if path is not None:
        _read_config_file(config, path)
        config.values["config"] = path
        config.sources["config"] = "command line" if "config" in command_line else (
            variable if "config" in env_args else "found in the current directory"
        )

    _apply(config, env_args, variable)
    _apply(config, command_line, "command line")
    _check_consistency(config)
    for name, setting in SETTINGS.items():
        if setting.pending and config.sources[name] != "default" and config.values[name] != setting.default:
            config.warnings.append(
                f"setting '{name}' is not implemented yet ({setting.pending}); it has no effect"
            )
    return config


def _read_config_file(config: Config, spec: str) -> None:
    """Apply the config file's settings; answer the gunicorn settings forkserve does not have."""
    gunicorn_only = [name for name in ANSWERS if answer_for(name, SETTINGS)]
    try:
        path = locate(spec)
        found = read_config_file(path, SETTINGS, also=gunicorn_only)
    except ConfigFileError as error:
        raise UsageError(str(error)) from None
    for name, (value, line) in found.items():
        where = f"{path} line {line}" if line else str(path)
        if name not in SETTINGS:
            _gunicorn_only(config, name, value, where, f"gunicorn setting '{name}' in {where}")
            continue
        try:
            config.set(name, value, where)
        except ValueError as error:
            raise UsageError(f"{error} (in {where})") from None


def _check_consistency(config: Config) -> None:
    """Checks that involve a value's form beyond its type."""
    for item in config.raw_env:
        if "=" not in item or not item.partition("=")[0]:
            raise UsageError(f"setting 'raw_env' expects NAME=VALUE items, got '{item}'")
    if not config.bind:
        raise UsageError("setting 'bind' needs at least one address")
    if config.worker_tmp_dir is not None and not os.path.isdir(config.worker_tmp_dir):
        raise UsageError(f"setting 'worker_tmp_dir': '{config.worker_tmp_dir}' is not a directory")


def print_config(config: Config, stream: Any = None) -> None:
    """Every setting, its resolved value and where the value came from."""
    stream = stream or sys.stdout
    width = max(len(name) for name in SETTINGS)
    for section in SECTIONS:
        print(f"# {section}", file=stream)
        for name, setting in SETTINGS.items():
            if setting.section == section:
                value = config.values[name]
                shown = oct(value) if name == "umask" else format_value(value)
                print(f"{name:<{width}} = {shown}  # {config.sources[name]}", file=stream)
        print(file=stream)
    if config.notes or config.warnings:
        print("# Notes", file=stream)
        for line in (*config.warnings, *config.notes):
            print(f"# {line}", file=stream)
