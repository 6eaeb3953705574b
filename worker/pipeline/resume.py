"""Resumable state of long jobs in object storage, keyed by job: a retried job (after a crash or a
worker loss) pulls the newest checkpoint folder before it starts and continues from it.

Layout: ``jobs/<job_id>/state/<name>/<folder>/<file>`` plus ``jobs/<job_id>/state/<name>/manifest.json``
(``{"latest": folder, "files": [...]}``), written after the folder's files, so a reader never sees a
manifest naming files that are not there yet.
"""

from __future__ import annotations

import json
from pathlib import Path

from service.storage import ArtifactStore, job_artifact_key
from worker.settings import WorkerSettings
from worker.storage_io import download, get_bytes, put_bytes, upload


class StateSync:
    """Mirror of one local folder of checkpoint sub-folders (``local``) for job ``job_id``."""

    def __init__(
        self, store: ArtifactStore, wsettings: WorkerSettings, job_id: str, name: str, local: Path
    ) -> None:
        self.store, self.wsettings, self.job_id, self.name, self.local = store, wsettings, job_id, name, local
        self.pushed: set[str] = set()
        self._versions: dict[str, tuple[int, int]] = {}

    def _key(self, rel: str) -> str:
        return job_artifact_key(self.job_id, f"state/{self.name}/{rel}")

    def pull(self) -> str | None:
        """Download the newest stored folder into ``local``; returns its name (None: nothing stored)."""
        raw = get_bytes(self.store, self._key("manifest.json"), self.wsettings)
        if raw is None:
            return None
        manifest = json.loads(raw)
        for rel in manifest["files"]:
            dest = self.local / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            download(self.store, self._key(rel), dest, self.wsettings)
        self.pushed.add(manifest["latest"])
        return str(manifest["latest"])

    def push(self, folder: Path) -> None:
        """Upload ``folder`` (a complete checkpoint inside ``local``) once, then point the manifest at it."""
        if folder.name in self.pushed:
            return
        files = [str(p.relative_to(self.local)) for p in sorted(folder.rglob("*")) if p.is_file()]
        for rel in files:
            upload(self.store, self._key(rel), self.local / rel, self.wsettings)
        manifest = {"latest": folder.name, "files": files}
        put_bytes(self.store, self._key("manifest.json"), json.dumps(manifest).encode(), self.wsettings)
        self.pushed.add(folder.name)

    def push_files(self) -> int:
        """Upload every new or changed file under ``local`` (JSON last: it marks a complete cache
        entry), then rewrite the manifest; returns how many files were uploaded."""
        files = sorted((p for p in self.local.rglob("*") if p.is_file() and not p.name.startswith(".")),
                       key=lambda p: (p.suffix == ".json", str(p)))  # fmt: skip
        sent = 0
        for path in files:
            rel, st = str(path.relative_to(self.local)), path.stat()
            version = (st.st_size, st.st_mtime_ns)
            if self._versions.get(rel) != version:
                upload(self.store, self._key(rel), path, self.wsettings)
                self._versions[rel] = version
                sent += 1
        if sent:
            manifest = {"latest": "", "files": [str(p.relative_to(self.local)) for p in files]}
            put_bytes(self.store, self._key("manifest.json"), json.dumps(manifest).encode(), self.wsettings)
        return sent
