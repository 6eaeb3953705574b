"""Typed access to JSON fields with errors that name the file, the entry, the key and what is accepted."""

from __future__ import annotations

from typing import Any

from core.errors import ConfigError

_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
}


def require(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``obj[key]`` checked against ``kind`` (int accepted for float; bool never counts as int)."""
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise ConfigError(f"{where}: missing key {key!r}")
    return check_type(obj[key], kind, f"{where}, key {key!r}")


def optional(
    obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = None
) -> Any:
    if key not in obj or obj[key] is None:
        return default
    return check_type(obj[key], kind, f"{where}, key {key!r}")


def check_type(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = False
    for k in kinds:
        if k is int:
            ok = ok or (isinstance(value, int) and not isinstance(value, bool))
        elif k is float:
            ok = ok or (isinstance(value, int | float) and not isinstance(value, bool))
        else:
            ok = ok or isinstance(value, k)
    if not ok:
        accepted = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise ConfigError(f"{where}: expected {accepted}, got {value!r:.60}")
    return value


def number_list(value: Any, where: str) -> list[float]:
    """A flat list of numbers (a bare number counts as a one-element list)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [float(value)]
    check_type(value, list, where)
    for v in value:
        check_type(v, float, where)
    return [float(v) for v in value]


def string_bool(value: Any, where: str) -> bool:
    """AIMET's booleans: the strings "True"/"False" (0.6.1, quantsim configs) or JSON booleans."""
    if isinstance(value, bool):
        return value
    if value in ("True", "true"):
        return True
    if value in ("False", "false"):
        return False
    raise ConfigError(f"{where}: expected 'True' or 'False', got {value!r:.60}")
