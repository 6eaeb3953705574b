"""The embedded data directory is private: the directory 0700, everything created in it 0600/0700 —
the database, its WAL, objects, logs — even under a permissive umask (it was 0644 under umask 022)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, sys
os.umask(0o022)
from worker.embedded.datadir import DataDir
from service.db.migrate import upgrade
from service.storage.local import LocalArtifactStore
data = DataDir.at(sys.argv[1])
settings = data.settings("http://127.0.0.1:1")
upgrade(settings)
store = LocalArtifactStore(settings.local_storage_dir, settings.public_url, settings.secret_key)
store.put_stream("blobs/sha256/ab/cd", iter([b"tenant data"]))
(data.logs / "api.log").write_text("a child's log")
"""


def test_everything_in_the_data_directory_is_private(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    root.chmod(0o755)  # as an earlier version left it
    subprocess.run([sys.executable, "-c", SCRIPT, str(root)], check=True, cwd=os.getcwd(), timeout=120)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    found = list(root.rglob("*"))
    assert any(p.name == "lowbit.db" for p in found) and any(p.name == "cd" for p in found)
    loose = [(str(p.relative_to(root)), oct(stat.S_IMODE(p.stat().st_mode))) for p in found
             if stat.S_IMODE(p.stat().st_mode) & 0o077]  # fmt: skip
    assert loose == []
