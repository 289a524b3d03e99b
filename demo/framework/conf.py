"""Settings access and dotted-path imports.

Settings live in a plain module named by ``DEMO_SETTINGS_MODULE`` (default
``demo.settings``). Values are looked up on every access rather than copied,
so a test that monkeypatches the module sees its change immediately.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

ENVIRONMENT_VARIABLE = "DEMO_SETTINGS_MODULE"
DEFAULT_SETTINGS_MODULE = "demo.settings"

_DEFAULTS: dict[str, Any] = {
    "DEBUG": False,
    "MIDDLEWARE": [],
    "DEFAULT_CHARSET": "utf-8",
    "MAX_UPLOAD_SIZE": 256 * 1024 * 1024,
    "DATA_UPLOAD_MAX_MEMORY_SIZE": 2_621_440,
    "FILE_UPLOAD_MAX_MEMORY_SIZE": 1024 * 1024,
}


class Settings:
    """Attribute proxy onto the configured settings module, with defaults."""

    def __getattr__(self, name: str) -> Any:
        module_name = os.environ.get(ENVIRONMENT_VARIABLE, DEFAULT_SETTINGS_MODULE)
        module = importlib.import_module(module_name)
        try:
            return getattr(module, name)
        except AttributeError:
            if name in _DEFAULTS:
                return _DEFAULTS[name]
            raise AttributeError(f"setting {name!r} is not defined") from None


settings = Settings()


def import_string(dotted_path: str) -> Any:
    """Import ``package.module.attr`` so settings can name classes as strings."""
    module_path, _, attr = dotted_path.rpartition(".")
    if not module_path:
        raise ImportError(f"{dotted_path!r} is not a dotted path")
    module = importlib.import_module(module_path)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_path!r} has no attribute {attr!r}") from None
