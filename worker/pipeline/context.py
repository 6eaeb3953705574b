"""What the stages of one job share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.storage import ArtifactStore
from service.uploads.budgets import UploadBudgets
from worker.monitor import JobMonitor
from worker.settings import WorkerSettings


@dataclass
class TechniqueResult:
    """A technique's output: ``sim`` (a calibrated core.quantsim.QuantSim, or None when the technique
    produces only a report), extra ``metrics`` and extra ``files`` (artifact name → local path)."""

    sim: Any
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class JobContext:
    """One job's inputs and working state; ``spec`` is the stored JSON job spec (service JobSpec)."""

    job_id: str
    spec: dict[str, Any]
    workdir: Path
    store: ArtifactStore
    monitor: JobMonitor
    wsettings: WorkerSettings
    device: str = "cpu"
    model_path: Path | None = None
    calib_path: Path | None = None
    eval_path: Path | None = None
    train_path: Path | None = None  # a single-file training dataset (qat)
    train_manifest: dict[str, Any] | None = None  # a sharded training dataset (core.qat.ShardManifest JSON)
    loaded: Any = None  # core.io.LoadedModel
    prepared: Any = None  # core.graph.PreparedModel (a torch.fx GraphModule), the techniques' starting point
    calib: Any = None  # core.io.CalibrationData
    evaluation: Any = None  # core.io.CalibrationData or None
    train: Any = None  # core.io.CalibrationData of train_path, or None
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    budgets: UploadBudgets = field(default_factory=UploadBudgets)  # the upload check's, re-run on fetch
    uploaded: list[Any] = field(default_factory=list)  # artifacts.Uploaded, stored but not yet published

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.spec.get("params") or {})

    def quantsim_kwargs(self) -> dict[str, Any]:
        """QuantSim arguments from the spec (config, bitwidths, scheme)."""
        return {
            "config": self.spec.get("quantsim_config") or self.spec.get("preset") or None,
            "param_bw": int(self.spec.get("param_bw", 8)),
            "output_bw": int(self.spec.get("output_bw", 8)),
            "scheme": str(self.spec.get("scheme", "min_max")),
        }

    def cancel_check(self) -> bool:
        """The engine's cancel callback."""
        return self.monitor.cancelled()
