"""Converters for setting values.

Every setting can arrive as a string (command line, ``FORKSERVE_CMD_ARGS``, environment) or as a
Python object (``forkserve.conf.py``). A validator accepts both, returns the normalised value, and
raises ``ValueError`` with a short "expected ..." phrase that the registry turns into a message
naming the setting — so one function per type serves every source.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

Validator = Callable[[Any], Any]

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def _describe(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f"'{value}'"


def integer(minimum: int | None = 0, maximum: int | None = None, what: str = "") -> Validator:
    """Whole numbers; strings of digits are accepted, floats and booleans are not."""
    phrase = what or (
        "a positive integer" if minimum == 1 else "a non-negative integer" if minimum == 0 else "an integer"
    )

    def convert(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected {phrase}, got {_describe(value)}")
        if isinstance(value, str):
            try:
                value = int(value.strip(), 10)
            except ValueError:
                raise ValueError(f"expected {phrase}, got {_describe(value)}") from None
        if not isinstance(value, int):
            raise ValueError(f"expected {phrase}, got {_describe(value)}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ValueError(f"expected {phrase}, got {value}")
        return value

    return convert


def number(minimum: float = 0.0) -> Validator:
    """Seconds and similar quantities: ints, floats or numeric strings, at least ``minimum``."""
    phrase = f"a number of at least {minimum:g}"

    def convert(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(f"expected {phrase}, got {_describe(value)}")
        try:
            result = float(value.strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {phrase}, got {_describe(value)}") from None
        if math.isnan(result) or result < minimum:
            raise ValueError(f"expected {phrase}, got {_describe(value)}")
        return result

    return convert


def boolean(value: Any) -> bool:
    """True/False, or the usual spellings of them in a string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ValueError(f"expected true or false, got {_describe(value)}")


def boolean_or_none(none_means: bool) -> Validator:
    """A boolean where None stands for ``none_means``: gunicorn writes some defaults as None
    (``sendfile = None`` is "on"), and its config files carry that spelling."""

    def convert(value: Any) -> bool:
        return none_means if value is None else boolean(value)

    return convert


def string(value: Any) -> str:
    """Any text."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_describe(value)}")
    return value


def optional_string(value: Any) -> str | None:
    """Text, or None (or an empty string) for 'not set'."""
    if value is None:
        return None
    value = string(value)
    return value or None


def string_list(value: Any) -> list[str]:
    """A list of strings; a single string becomes a one-element list."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ValueError(f"expected a string or a list of strings, got {_describe(value)}")


def comma_list(value: Any) -> list[str]:
    """A list of strings, or one string of comma-separated items (as gunicorn accepts)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [item.strip() for item in string_list(value) if item.strip()]


def choice(*options: str) -> Validator:
    """One of a fixed set of words."""

    def convert(value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        raise ValueError(f"expected one of {', '.join(options)}, got {_describe(value)}")

    return convert


def octal(value: Any) -> int:
    """A file mode mask: an int, or a string read as octal ('022', '0o022') or hex ('0x12').

    Digits without a leading 0 ('22') are refused: gunicorn reads them as decimal, the shell's
    umask as octal, and a umask silently off by that difference is worse than an error."""
    if isinstance(value, int) and not isinstance(value, bool):
        result = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if len(text) > 1 and text.isdigit() and not text.startswith("0"):
            # gunicorn reads '-m 22' as decimal 22 (0o26), the shell's umask as octal 022: refuse
            # the digits rather than pick one, and name both readings.
            decimal = oct(int(text))
            if set(text) <= set("01234567"):
                raise ValueError(f"= '{text}' is ambiguous: gunicorn reads it as decimal ({decimal}), the "
                                 f"shell's umask as octal (0o{text}); write {decimal} or 0{text}")
            raise ValueError(f"= '{text}' is decimal, as gunicorn reads it: write {decimal} "
                             f"(or 0{decimal[2:]})")
        try:
            if text.startswith("0x"):
                result = int(text, 16)
            else:
                result = int(text.removeprefix("0o") or "0", 8)
        except ValueError:
            raise ValueError(f"expected an octal mask such as 022, got {_describe(value)}") from None
    else:
        raise ValueError(f"expected an octal mask such as 022, got {_describe(value)}")
    if not 0 <= result <= 0o777:
        raise ValueError(f"expected an octal mask between 000 and 777, got {oct(result)}")
    return result


def mapping(value: Any) -> dict[str, Any]:
    """A dict with string keys (logconfig_dict)."""
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return dict(value)
    raise ValueError(f"expected a dict with string keys, got {_describe(value)}")


def header_mapping(value: Any) -> dict[str, str]:
    """Header name → value pairs (secure_scheme_headers). Names are matched case-insensitively."""
    if isinstance(value, str):
        # CLI form: "X-FORWARDED-PROTO=https,X-FORWARDED-SSL=on"
        pairs = {}
        for item in value.split(","):
            if not item.strip():
                continue
            name, sep, wanted = item.partition("=")
            if not sep:
                raise ValueError(f"expected NAME=VALUE pairs separated by commas, got {_describe(value)}")
            pairs[name.strip()] = wanted.strip()
        value = pairs
    if isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return {name.upper(): wanted for name, wanted in value.items()}
    raise ValueError(f"expected a dict of header name to value, got {_describe(value)}")


def user_or_group(value: Any) -> int | str | None:
    """A user or group given by name or number; the lookup happens when privileges are dropped."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        text = value.strip()
        return int(text) if text.isdigit() else text
    raise ValueError(f"expected a name or a numeric id, got {_describe(value)}")


def _import_path(value: str) -> Any:
    """The object a dotted path names ('myproject.hooks.post_fork'), as gunicorn accepts for hooks."""
    import importlib

    module_name, _, attribute = value.strip().rpartition(".")
    if not module_name:
        raise ValueError(f"expected a function or a dotted path module.function, got {_describe(value)}")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except ImportError as error:
        raise ValueError(f"cannot import {_describe(value)}: {error}") from None
    except AttributeError:
        raise ValueError(f"module '{module_name}' has no '{attribute}'") from None


def _takes(function: Callable[..., Any], count: int) -> bool:
    """Whether ``function`` can be called with ``count`` positional arguments."""
    try:
        inspect.signature(function).bind(*([None] * count))
    except TypeError:
        return False
    except ValueError:  # builtins without a signature: trust them
        pass
    return True


def hook(arity: int, also: tuple[int, ...] = ()) -> Validator:
    """A callable (or a dotted path to one, as gunicorn allows) taking ``arity`` positional
    arguments, or None. A callable taking one of the ``also`` counts is wrapped to take ``arity``
    and drop the rest: gunicorn's ``post_request`` may take 2, 3 or 4."""

    def convert(value: Any) -> Callable[..., Any] | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = _import_path(value)
        if not callable(value):
            raise ValueError(f"expected a function taking {arity} argument(s), got {_describe(value)}")
        if _takes(value, arity):
            return value
        for count in also:
            if _takes(value, count):
                return _first_arguments(value, count)
        counts = " or ".join(str(n) for n in (*also, arity))
        raise ValueError(f"expected a function taking {counts} argument(s)")

    return convert


def _first_arguments(function: Callable[..., Any], count: int) -> Callable[..., Any]:
    """``function`` called with the first ``count`` arguments only; named as the user named it."""

    def call(*args: Any) -> Any:
        return function(*args[:count])

    call.__name__ = getattr(function, "__name__", "hook")
    call.__qualname__ = getattr(function, "__qualname__", call.__name__)
    return call


def file_list(value: Any) -> list[str]:
    """Files (reload_extra_files). A glob pattern is refused with its replacement: gunicorn 27
    expands patterns, forkserve watches the files it is given."""
    files = string_list(value)
    for item in files:
        if any(char in item for char in "*?["):
            raise ValueError(
                f"= '{item}' is a pattern; forkserve watches files: in the config file write "
                f"reload_extra_files = glob.glob('{item}', recursive=True)"
            )
    return files


def address_list(value: Any) -> list[str]:
    """Peer addresses or networks (CIDR), or '*', as a list; each one is checked now."""
    import ipaddress

    items = comma_list(value)
    for item in items:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"expected IP addresses, CIDR networks or '*', got '{item}'") from None
    return items


def cert_reqs(value: Any) -> str:
    """none/optional/required, or gunicorn's numbers (the ssl module's CERT_* values 0, 1, 2)."""
    names = ("none", "optional", "required")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2:
        return names[value]
    if isinstance(value, str) and value.strip().isdigit() and int(value) <= 2:
        return names[int(value)]
    return choice(*names)(value)


def proxy_protocol(value: Any) -> str:
    """off/v1/v2/auto; gunicorn's boolean means 'auto' when true (a header is used if sent)."""
    if isinstance(value, bool):
        return "auto" if value else "off"
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
        return "auto"
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "0"):
        return "off"
    return choice("off", "v1", "v2", "auto")(value)


def statsd_address(value: Any) -> str | None:
    """gunicorn's statsd_host: HOST:PORT (port 8125 when left out), [IPv6]:PORT or unix:PATH."""
    text = optional_string(value)
    if not text:
        return None
    if text.startswith("unix:"):
        if not text[5:].lstrip("/"):
            raise ValueError(f"needs a path after 'unix:', got {text!r}")
        return "unix:" + (text[7:] if text.startswith("unix://") else text[5:])
    if text.startswith("["):
        host, _, port = text.partition("]")
        host, port = host + "]", port.removeprefix(":")
    elif text.count(":") > 1:
        host, port = f"[{text}]", ""
    else:
        host, _, port = text.partition(":")
    if host in ("", "[]") or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"must be HOST:PORT or unix:PATH, got {text!r}")
    return f"{host}:{port or 8125}"
