"""The command catalog (core/command_catalog.py) kept between `lowbit` runs.

Discovering the commands reads every installed distribution's entry points (importlib.metadata, which
also imports email, csv and zipfile) and parses each command module's syntax tree: about a third of the
CPU that `lowbit jobs` or `lowbit --help` costs. The answer changes only when the interpreter, its
import path, the installed distributions or a command module's source change, so it is stored in
``$XDG_CACHE_HOME/lowbit`` (default ``~/.cache/lowbit``) with a fingerprint of exactly those:

- the interpreter and ``sys.path``, with each path directory's mtime (installing or removing a
  distribution adds or removes its ``*.dist-info`` there, which changes the directory's mtime);
- size and mtime of every command module file, and the mtime of each directory searched for engine
  command modules (a module added or removed there).

Any difference, or a cache that cannot be read, means discovering again and rewriting it; a cache that
cannot be written is simply not kept (``LOWBIT_NO_COMMAND_CACHE=1`` turns it off).
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from pathlib import Path
from typing import Any

VERSION = 1


def cache_file() -> Path | None:
    if os.environ.get("LOWBIT_NO_COMMAND_CACHE"):
        return None
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    # One file per interpreter and import path (two checkouts do not evict each other); the fingerprint
    # inside is compared in full, so the short name needs no collision resistance.
    tag = zlib.crc32(json.dumps([sys.executable, sys.path]).encode())
    return Path(root) / "lowbit" / f"commands-{tag:08x}.json"


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]


def fingerprint(files: list[str]) -> dict[str, Any]:
    """What the catalog depends on: interpreter, import path and its directories, the given files."""
    return {
        "version": VERSION,
        "python": [sys.executable, sys.version],
        "path": list(sys.path),
        "dirs": [_stamp(p or ".") for p in sys.path],
        "files": {f: _stamp(f) for f in files},
    }


def load() -> list[Any] | None:
    """The stored catalog rows if the fingerprint still matches, else None."""
    path = cache_file()
    if path is None:
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        expected = fingerprint(list(stored["fingerprint"]["files"]))
        return list(stored["sources"]) if stored["fingerprint"] == expected else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(sources: list[Any], files: list[str]) -> None:
    """Keep ``sources`` (JSON rows) for the next run; any failure to write is ignored."""
    path = cache_file()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"fingerprint": fingerprint(files), "sources": sources}), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a concurrent run reads the old file or the new one
    except OSError:
        return
