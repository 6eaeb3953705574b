"""The command catalog kept between `lowbit` runs: reused while nothing it depends on changed, rebuilt when
a command module, an import-path directory (a distribution installed or removed) or the cache file change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import command_cache, command_catalog


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LOWBIT_NO_COMMAND_CACHE", raising=False)
    return tmp_path / "cache"


def test_second_discovery_comes_from_the_cache_and_matches(
    cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = command_catalog.discover()
    assert {"quantize", "jobs", "submit", "worker"} <= {c.name for s in fresh for c in s.commands or ()}
    assert list((cache_home / "lowbit").glob("commands-*.json"))

    def refuse(files: list[str]) -> list[command_catalog.CommandSource]:
        raise AssertionError("discovered again although nothing changed")

    monkeypatch.setattr(command_catalog, "_discover_fresh", refuse)
    assert command_catalog.discover() == fresh


def test_a_changed_file_or_path_directory_invalidates(cache_home: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    module = tmp_path / "cmds.py"
    module.write_text("def register(sub):\n    sub.add_parser('one')\n")
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    rows = [["cmds", "register", [["one", ""]]]]
    command_cache.store(rows, [str(module)])
    assert command_cache.load() == rows

    module.write_text("def register(sub):\n    sub.add_parser('one')\n    sub.add_parser('two')\n")
    assert command_cache.load() is None  # the module's size changed
    command_cache.store(rows, [str(module)])
    assert command_cache.load() == rows
    (site / "plugin-1.0.dist-info").mkdir()  # a distribution installed on the path
    os.utime(site, ns=(os.stat(site).st_atime_ns, os.stat(site).st_mtime_ns + 1_000_000_000))
    assert command_cache.load() is None


def test_cli_works_with_a_corrupt_or_unwritable_cache(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = subprocess.run(
        [sys.executable, "-m", "core.cli", "--help"], env=env, capture_output=True, text=True
    )
    assert first.returncode == 0 and "submit" in first.stdout
    (cached,) = (tmp_path / "cache" / "lowbit").glob("commands-*.json")
    cached.write_text("{not json")
    again = subprocess.run(
        [sys.executable, "-m", "core.cli", "--help"], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0 and again.stdout == first.stdout and again.stderr == ""
    blocked = {**env, "XDG_CACHE_HOME": str(tmp_path / "a-file")}
    (tmp_path / "a-file").write_text("")  # the cache directory cannot be created
    third = subprocess.run(
        [sys.executable, "-m", "core.cli", "--help"], env=blocked, capture_output=True, text=True
    )
    assert third.returncode == 0 and third.stdout == first.stdout and third.stderr == ""


def test_version_is_looked_up_only_when_asked(tmp_path: Path) -> None:
    """`--version` prints the installed version on stdout; `--help` imports importlib.metadata only to
    discover the commands, so not at all once the catalog is cached."""
    from importlib.metadata import version

    shown = subprocess.run([sys.executable, "-m", "core.cli", "--version"], capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout == f"lowbit {version('lowbit')}\n"
    probe = (
        "import sys; from core.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    )
    probe += "print('importlib.metadata' in sys.modules, file=sys.stderr)"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    imported = [
        subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stderr.split()[
            -1
        ]
        for _ in range(2)
    ]
    assert imported == ["True", "False"]  # cold: discovered with entry points; warm: from the cache
