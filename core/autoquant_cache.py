"""AutoQuant's on-disk stage cache: a re-run after a crash resumes instead of recomputing.

Layout: ``<cache_dir>/<stage>-<key>.json`` (score, details, quantizer flags) and
``<stage>-<key>.safetensors`` (the quantized model's state: weights and quantizer encodings). JSON and
safetensors only — never pickle.

Each stage has its own key: ``stage_key(parent, stage, settings)`` hashes the key of what the stage
starts from with the stage's own settings, and the chain starts at ``fingerprint`` (the model's weights
and graph, the calibration data and the run-wide settings). A changed input never reuses a stale result,
and a changed setting of one stage (AdaRound's iterations, say) re-runs that stage and those after it only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CACHE_FORMAT = 2


def fingerprint(model: nn.Module, batches: list[tuple[Any, ...]], settings: dict[str, Any]) -> str:
    """A short hex digest of model (graph code + state), calibration data and settings."""
    digest = hashlib.sha256(f"lowbit-autoquant-cache-v{CACHE_FORMAT}".encode())
    digest.update(str(getattr(model, "code", type(model).__qualname__)).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for batch in batches:
        for t in batch:
            if isinstance(t, torch.Tensor):
                digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def stage_key(parent: str, stage: str, settings: dict[str, Any]) -> str:
    """The cache key of ``stage`` run from ``parent``'s result (a key) with ``settings``."""
    digest = hashlib.sha256(f"{parent}/{stage}/".encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


class StageCache:
    """Stores and loads stage entries under ``root``, one per (stage, key); a None root disables caching."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.dir = Path(root) if root is not None else None

    @property
    def enabled(self) -> bool:
        return self.dir is not None

    def load(self, stage: str, key: str) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None] | None:
        if self.dir is None:
            return None
        meta_path = self.dir / f"{stage}-{key}.json"
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text())
        tensors_path = self.dir / f"{stage}-{key}.safetensors"
        tensors = load_file(str(tensors_path)) if tensors_path.is_file() else None
        return meta, tensors

    def save(
        self, stage: str, key: str, meta: dict[str, Any], state: dict[str, torch.Tensor] | None = None
    ) -> None:
        if self.dir is None:
            return
        entry = f"{stage}-{key}"
        self.dir.mkdir(parents=True, exist_ok=True)
        if state is not None:
            # safetensors refuses aliased storage (duplicated modules share weights): store copies.
            tensors = {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}
            tmp = self.dir / f".{entry}.safetensors.tmp"
            save_file(tensors, str(tmp))
            tmp.replace(self.dir / f"{entry}.safetensors")
        # The JSON is written last and atomically: its presence marks a complete entry.
        tmp_meta = self.dir / f".{entry}.json.tmp"
        tmp_meta.write_text(json.dumps(meta, indent=1, sort_keys=True))
        tmp_meta.replace(self.dir / f"{entry}.json")
