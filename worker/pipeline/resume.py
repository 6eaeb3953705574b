"""Resumable state of long jobs in object storage, keyed by job: a retried job (after a crash or a
worker loss) pulls the newest checkpoint folder before it starts and continues from it.

Layout: ``jobs/<job_id>/state/<name>/<folder>/<file>`` plus ``jobs/<job_id>/state/<name>/manifest.json``
(``{"latest": folder, "files": [...]}``), written after the folder's files, so a reader never sees a
manifest naming files that are not there yet.

This state is a resume aid, not a result: when object storage is unreachable past its retry budget,
pull starts from local state and push skips the mirror, each with a warning in the job's log, and
the attempt goes on. Every write first checks the attempt's fence (worker/fence.py): an attempt
that lost its job stops instead of overwriting the state its successor resumes from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Protocol

from service.storage import ArtifactStore, job_artifact_key
from worker.fence import FenceLost
from worker.retry import InfrastructureError
from worker.settings import WorkerSettings
from worker.storage_io import download, get_bytes, put_bytes, upload


class Owner(Protocol):
    """What StateSync needs of the job's monitor (worker.monitor.JobMonitor)."""

    def still_owns(self) -> bool: ...

    def log(self, message: str, level: str = "info") -> None: ...


class StateSync:
    """Mirror of one local folder of checkpoint sub-folders (``local``) for job ``job_id``."""

    def __init__(
        self,
        store: ArtifactStore,
        wsettings: WorkerSettings,
        job_id: str,
        name: str,
        local: Path,
        owner: Owner | None = None,
    ) -> None:
        self.store, self.wsettings, self.job_id, self.name, self.local = store, wsettings, job_id, name, local
        self.owner = owner
        self.pushed: set[str] = set()
        self._versions: dict[str, tuple[int, int]] = {}

    def _key(self, rel: str) -> str:
        return job_artifact_key(self.job_id, f"state/{self.name}/{rel}")

    def _check_fence(self) -> None:
        if self.owner is not None and not self.owner.still_owns():
            raise FenceLost(f"{self.name} state of job {self.job_id} not written: the attempt lost its job")

    def _warn(self, message: str) -> None:
        if self.owner is not None:
            self.owner.log(message, level="warning")

    def pull(self) -> str | None:
        """Download the newest stored folder into ``local``; returns its name (None: nothing stored,
        or object storage unreachable: then the attempt starts from local state, with a warning)."""
        try:
            raw = get_bytes(self.store, self._key("manifest.json"), self.wsettings)
            if raw is None:
                return None
            manifest = json.loads(raw)
            for rel in manifest["files"]:
                dest = self.local / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                download(self.store, self._key(rel), dest, self.wsettings)
        except InfrastructureError as exc:
            # A half-pulled folder must not look like a checkpoint: start from what was here before.
            for child in list(self.local.iterdir()) if self.local.is_dir() else []:
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
            self._warn(f"stored {self.name} state unreadable, starting from local state: {exc}")
            return None
        self.pushed.add(manifest["latest"])
        return str(manifest["latest"])

    def push(self, folder: Path) -> None:
        """Upload ``folder`` (a complete checkpoint inside ``local``) once, then point the manifest at it.
        Storage down past its budget: skipped with a warning (the next checkpoint tries again)."""
        if folder.name in self.pushed:
            return
        self._check_fence()
        files = [str(p.relative_to(self.local)) for p in sorted(folder.rglob("*")) if p.is_file()]
        try:
            for rel in files:
                upload(self.store, self._key(rel), self.local / rel, self.wsettings)
            manifest = {"latest": folder.name, "files": files}
            self._check_fence()
            put_bytes(self.store, self._key("manifest.json"), json.dumps(manifest).encode(), self.wsettings)
        except InfrastructureError as exc:
            self._warn(f"{self.name} checkpoint {folder.name} not mirrored (kept locally): {exc}")
            return
        self.pushed.add(folder.name)

    def push_files(self) -> int:
        """Upload every new or changed file under ``local`` (JSON last: it marks a complete cache
        entry), then rewrite the manifest; returns how many files were uploaded (storage down past
        its budget: what was sent so far, with a warning; the next call sends the rest)."""
        files = sorted((p for p in self.local.rglob("*") if p.is_file() and not p.name.startswith(".")),
                       key=lambda p: (p.suffix == ".json", str(p)))  # fmt: skip
        self._check_fence()
        sent = 0
        try:
            for path in files:
                rel, st = str(path.relative_to(self.local)), path.stat()
                version = (st.st_size, st.st_mtime_ns)
                if self._versions.get(rel) != version:
                    upload(self.store, self._key(rel), path, self.wsettings)
                    self._versions[rel] = version
                    sent += 1
            if sent:
                manifest = {"latest": "", "files": [str(p.relative_to(self.local)) for p in files]}
                self._check_fence()
                put_bytes(
                    self.store, self._key("manifest.json"), json.dumps(manifest).encode(), self.wsettings
                )
        except InfrastructureError as exc:
            self._warn(f"{self.name} state not mirrored (kept locally): {exc}")
        return sent
