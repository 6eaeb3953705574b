"""The run bundle in object storage (``jobs/<id>/dist/``) for training pods that have no worker
beside them (a Kubeflow TrainJob): fetched into a local folder before training; rank 0 mirrors its
checkpoints (through the job's usual StateSync, so a retried job resumes from them), progress, the
trained weights and the result back."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from service.storage import ArtifactStore
from worker.pipeline.resume import StateSync
from worker.settings import WorkerSettings
from worker.storage_io import download, upload

PUSH_EVERY_S = 5.0


class StoreMirror:
    def __init__(self, store: ArtifactStore, wsettings: WorkerSettings, prefix: str, rank: int) -> None:
        self.store, self.wsettings, self.prefix, self.rank = store, wsettings, prefix.rstrip("/"), rank
        self.sync: StateSync | None = None
        self._last_push = 0.0

    def fetch(self) -> Path:
        """Download the bundle and its inputs; pull the newest checkpoint; return the local folder."""
        root = Path(tempfile.mkdtemp(prefix="lowbit-train-"))
        download(self.store, f"{self.prefix}/bundle.json", root / "bundle.json", self.wsettings)
        bundle = json.loads((root / "bundle.json").read_text())
        for role in ("model", "calib", "eval", "train"):
            if bundle.get(role):
                bundle[role] = str(
                    download(self.store, f"{self.prefix}/{bundle[role]}", root / bundle[role], self.wsettings)
                )
        (root / "bundle.json").write_text(json.dumps(bundle))
        (root / "ckpt").mkdir()
        self.sync = StateSync(self.store, self.wsettings, bundle["job_id"], "qat", root / "ckpt")
        self.sync.pull()
        return root

    def push(self, checkpoints: Path, progress: Path) -> None:
        """Rank 0: the newest checkpoint and the progress file, at most every few seconds."""
        from core.qat import list_checkpoints

        if self.rank != 0 or self.sync is None or time.monotonic() - self._last_push < PUSH_EVERY_S:
            return
        self._last_push = time.monotonic()
        done = list_checkpoints(checkpoints)
        if done:
            self.sync.push(done[-1])
        upload(self.store, f"{self.prefix}/progress.json", progress, self.wsettings)

    def finish(self, result: Path, final: Path | None) -> None:
        """Rank 0: the trained weights first, then the result (its presence means the weights are there)."""
        if final is not None:
            upload(self.store, f"{self.prefix}/final.safetensors", final, self.wsettings)
        upload(self.store, f"{self.prefix}/result.json", result, self.wsettings)
