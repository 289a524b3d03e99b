"""Filling in the @NAME@ placeholders of the templates in conf/.

The files in conf/ are what users copy, and the tests run those very files. Substitution is
strict both ways: a placeholder left unfilled or a value the template never asks for is an error,
so a renamed placeholder cannot make a test quietly run a different configuration.
"""

from __future__ import annotations

import re
from pathlib import Path

PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def placeholders(text: str) -> set[str]:
    """The placeholder names a template uses."""
    return set(PLACEHOLDER.findall(text))


def render(template: Path, values: dict[str, str]) -> str:
    """The template's text with every @NAME@ replaced by ``values[NAME]``."""
    text = template.read_text()
    wanted = placeholders(text)
    missing = wanted - set(values)
    unused = set(values) - wanted
    if missing or unused:
        raise AssertionError(
            f"{template.name}: placeholders without a value {sorted(missing)}, "
            f"values for no placeholder {sorted(unused)}"
        )
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)
