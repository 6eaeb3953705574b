"""The embedded data directory is private: the directory 0700, everything created in it 0600/0700 —
the database, its WAL, objects, logs — even under a permissive umask (it was 0644 under umask 022)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from service.db.migrate import upgrade
from service.storage.local import LocalArtifactStore
from worker.embedded.datadir import DataDir


def test_everything_in_the_data_directory_is_private(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    root.chmod(0o755)  # as an earlier version left it
    # In this process rather than a fresh interpreter: the umask is what matters, and a child paid ~10 s
    # of imports (alembic, settings) on a loaded CI host for nothing the check needs.
    previous = os.umask(0o022)
    try:
        data = DataDir.at(str(root))
        settings = data.settings("http://127.0.0.1:1")
        upgrade(settings)
        store = LocalArtifactStore(settings.local_storage_dir, settings.public_url, settings.secret_key)
        store.put_stream("blobs/sha256/ab/cd", iter([b"tenant data"]))
        (data.logs / "api.log").write_text("a child's log")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    found = list(root.rglob("*"))
    assert any(p.name == "lowbit.db" for p in found) and any(p.name == "cd" for p in found)
    loose = [(str(p.relative_to(root)), oct(stat.S_IMODE(p.stat().st_mode))) for p in found
             if stat.S_IMODE(p.stat().st_mode) & 0o077]  # fmt: skip
    assert loose == []
