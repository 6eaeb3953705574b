"""Encodings file formats, one module per AIMET version, each registering itself here.

A format turns an :class:`~core.export.records.EncodingsDoc` into the JSON-ready dict of its
version and back. Adding a version is adding a module that calls :func:`register_format`.

>>> sorted(ENCODING_VERSIONS)
['0.6.1', '1.0.0', '2.0.0']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError
from core.export.records import EncodingsDoc


@dataclass(frozen=True)
class EncodingFormat:
    """``write(doc) -> dict`` (JSON-ready) and ``read(data, where) -> EncodingsDoc`` for one version."""

    version: str
    write: Callable[[EncodingsDoc], dict[str, Any]]
    read: Callable[[dict[str, Any], str], EncodingsDoc]


_FORMATS: dict[str, EncodingFormat] = {}


def register_format(fmt: EncodingFormat) -> EncodingFormat:
    _FORMATS[fmt.version] = fmt
    return fmt


def get_format(version: str) -> EncodingFormat:
    """The registered format for ``version``; ConfigError naming the accepted versions otherwise."""
    fmt = _FORMATS.get(str(version))
    if fmt is None:
        raise ConfigError(
            f"unknown encodings version {version!r}; choose one of {', '.join(sorted(_FORMATS))}"
        )
    return fmt


def encoding_versions() -> tuple[str, ...]:
    return tuple(sorted(_FORMATS))


# The built-in versions register themselves on import.
from core.export.formats import v0_6_1, v1_0_0, v2_0_0  # noqa: E402

ENCODING_VERSIONS: tuple[str, ...] = encoding_versions()

__all__ = [
    "ENCODING_VERSIONS",
    "EncodingFormat",
    "encoding_versions",
    "get_format",
    "register_format",
    "v0_6_1",
    "v1_0_0",
    "v2_0_0",
]
