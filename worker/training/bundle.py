"""The run bundle: a folder the worker writes for the processes of a distributed QAT run (its job
spec, where the inputs are, the device) and where rank 0 writes back (progress, checkpoints, the
trained weights, the result). Plain JSON and safetensors only."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUNDLE = "bundle.json"
PROGRESS = "progress.json"
RESULT = "result.json"
FINAL = "final.safetensors"
CANCEL = "cancel"
CHECKPOINTS = "ckpt"


@dataclass(frozen=True)
class Bundle:
    root: Path

    def path(self, name: str) -> Path:
        return self.root / name

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        """Write atomically (readers poll these files while ranks write them)."""
        tmp = self.root / f".{name}.{os.getpid()}"
        tmp.write_text(json.dumps(data, default=str))
        os.replace(tmp, self.root / name)

    def read_json(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.root / name).read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return None


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a killed worker must not leave a
    process group training on without it). No-op elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
