"""Docker Compose variable interpolation (test support, not product code).

Compose substitutes ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?message}``,
``${VAR?message}`` and ``$VAR`` in every string value before it validates the file; ``$$`` is a
literal ``$``. Validators that read the raw file (the compose-spec parser) see the placeholders
instead, so the tests interpolate first, exactly as ``docker compose config`` would.

>>> interpolate({"a": "${X:-1}-$$Y"}, {})
{'a': '1-$Y'}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_PATTERN = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariableError(ValueError):
    """A ``${VAR:?message}`` or ``${VAR?message}`` variable is unset."""


def _substitute(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        value = env.get(name)
        op, arg = match.group("op"), match.group("arg") or ""
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise MissingVariableError(f"required variable {name} is missing: {arg}")
        return value or ""

    return _PATTERN.sub(replace, text)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Return ``value`` (a loaded compose document) with every string value interpolated from ``env``.

    Keys are left alone, as Compose does. Raises MissingVariableError for an unset required variable.
    """
    if isinstance(value, str):
        return _substitute(value, env)
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    return value
