"""Reading and writing encodings files in any registered version (see core/export/formats/)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.export.formats import encoding_versions, get_format
from core.export.records import EncodingsDoc

# Encodings files hold a few numbers per channel; anything far larger is not one.
MAX_FILE_BYTES = 512 * 1024 * 1024


def parse_encodings(data: Any, where: str = "encodings") -> EncodingsDoc:
    """An :class:`EncodingsDoc` from an already-decoded JSON object; ``where`` names it in errors.

    The version comes from the ``version`` key (0.6.1, 1.0.0, 2.0.0). A file with only
    ``param_encodings`` (AdaRound's output) and no version is read as 0.6.1 when its sections are
    dicts and as 1.0.0 when they are lists.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: an encodings file is a JSON object, got {type(data).__name__}")
    version = data.get("version")
    if version is None:
        sections = [data.get(k) for k in ("activation_encodings", "param_encodings", "encodings")]
        if all(s is None for s in sections):
            raise ConfigError(
                f"{where}: no 'version' and none of 'activation_encodings', 'param_encodings', 'encodings'; "
                f"not an encodings file (versions {', '.join(encoding_versions())})"
            )
        if data.get("encodings") is not None:
            version = "2.0.0"
        else:
            version = "0.6.1" if any(isinstance(s, dict) for s in sections) else "1.0.0"
    if not isinstance(version, str):
        raise ConfigError(f"{where}, key 'version': expected a string such as '1.0.0', got {version!r:.40}")
    try:
        fmt = get_format(version)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return fmt.read(data, where)


def read_encodings_file(path: str | os.PathLike[str]) -> EncodingsDoc:
    """Parse an AIMET-style encodings file (0.6.1, 1.0.0 or 2.0.0).

    Raises ConfigError naming the file, the entry and the key for malformed content, and the
    accepted versions for an unknown one.

    >>> doc = read_encodings_file("shared/formats/aimet-2.42-sim-export-1.0.0.encodings")  # doctest: +SKIP
    >>> doc.params["conv1.weight"].granularity                                             # doctest: +SKIP
    'per_channel'
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"encodings file {str(p)!r} does not exist or is not a file")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise ConfigError(f"encodings file {str(p)!r} is larger than {MAX_FILE_BYTES} bytes")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"encodings file {str(p)!r} is not valid JSON: {exc}") from None
    return replace(parse_encodings(data, where=str(p)), source=p)


def encodings_json(doc: EncodingsDoc, version: str) -> dict[str, Any]:
    """The JSON-ready dict of ``doc`` in format ``version``."""
    return get_format(version).write(doc)


def write_encodings_file(doc: EncodingsDoc, path: str | os.PathLike[str], version: str) -> Path:
    """Write ``doc`` as format ``version`` (indented, keys sorted like AIMET's files)."""
    data = encodings_json(doc, version)
    p = Path(path)
    p.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n", encoding="utf-8")
    return p
