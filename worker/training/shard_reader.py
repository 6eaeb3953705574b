"""Opening training shards from object storage for core.qat.StreamSource: each shard is downloaded
to a temporary file, loaded with the engine's safe loader (no pickles; arrays matched to the model's
inputs and cast to its dtypes), and the file is deleted at once — local disk holds only the shards
being opened."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from service.storage import ArtifactStore
from service.uploads.budgets import UploadBudgets
from service.uploads.checks import check_file
from worker.settings import WorkerSettings
from worker.storage_io import download


class ShardOpener:
    """``open_shard(shard) -> (inputs in model input order, labels or None)`` over ``store``."""

    def __init__(
        self,
        store: ArtifactStore,
        wsettings: WorkerSettings,
        tmpdir: Path,
        loaded: Any,
        budgets: UploadBudgets,
    ) -> None:
        self.store, self.wsettings, self.tmpdir, self.loaded, self.budgets = (
            store,
            wsettings,
            tmpdir,
            loaded,
            budgets,
        )
        tmpdir.mkdir(parents=True, exist_ok=True)

    def __call__(self, shard: Any) -> tuple[list[np.ndarray], np.ndarray | None]:
        from core.io import load_data

        fd, name = tempfile.mkstemp(prefix="shard-", suffix=f".{shard.format}", dir=self.tmpdir)
        os.close(fd)
        path = Path(name)
        try:
            download(self.store, shard.locator, path, self.wsettings)
            check_file(shard.format, path, self.budgets.max_file_bytes, self.budgets)  # as on fetch
            data = load_data(path, self.loaded.input_names).for_model(self.loaded)
            # np.load of an .npz reads members into memory; nothing keeps the file open afterwards.
            return list(data.inputs.values()), data.labels
        finally:
            path.unlink(missing_ok=True)
