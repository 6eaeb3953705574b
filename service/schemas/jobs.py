"""Job specs (versioned) and job views."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from service.schemas.common import MAX_INT32, JsonObject, ResourceId, Strict

LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")]
LabelValue = Annotated[str, StringConstraints(max_length=200)]
Technique = Literal["quantsim", "ptq", "autoquant", "qat", "analyze"]
PtqStep = Literal[
    "bn_fold", "cle", "seq_mse", "adaround", "bn_reestimation", "bias_correction", "outlier_clip"
]


class QuantsimParams(Strict):
    quantized_input_passes: int = Field(
        default=0,
        ge=0,
        le=8,
        description="after calibration, re-observe activation ranges this many times with every quantizer "
        "active (ranges see the quantized inputs they get on target; 2 helps transformers)",
    )


class PtqParams(Strict):
    steps: list[PtqStep] = Field(default=["bn_fold", "cle"], min_length=1, max_length=5)
    adaround_iterations: int = Field(default=1000, ge=1, le=100_000)


class AutoquantParams(Strict):
    adaround_iterations: int = Field(default=1000, ge=1, le=100_000)


class QatParams(Strict):
    """The built-in QAT loop (core.qat.qat); README "QAT jobs" lists the defaults and what they do."""

    epochs: int = Field(default=1, ge=1, le=1000)
    learning_rate: float = Field(default=1e-5, gt=0, le=1)
    range_learning: bool = False
    batch_size: int = Field(default=32, ge=1, le=65_536, description="samples per process per micro-batch")
    accumulate_steps: int = Field(default=1, ge=1, le=1024, description="micro-batches per optimizer step")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    lr_schedule: Literal["constant", "cosine", "step"] = "constant"
    warmup_steps: int = Field(default=0, ge=0, le=1_000_000)
    lr_step_size: int = Field(
        default=0, ge=0, le=1_000_000, description="step schedule: 0 = a third of the steps"
    )
    lr_gamma: float = Field(default=0.1, gt=0, le=1)
    clip_grad_norm: float | None = Field(default=None, gt=0)
    loss: Literal["cross_entropy", "mse", "kl"] | None = Field(
        default=None,
        description="null: cross_entropy for integer labels, mse for float ones, kl (distillation) without",
    )
    eval_every: int = Field(
        default=0, ge=0, le=1_000_000, description="steps between evaluations; 0 = each epoch"
    )
    keep_best: bool = True
    early_stopping_patience: int = Field(default=0, ge=0, le=1000)
    bn_reestimation_batches: int = Field(default=0, ge=0, le=10_000)
    freeze_bn: bool = False
    amp: bool = Field(default=True, description="bf16 autocast on CUDA workers (ignored on CPU)")
    seed: int = Field(default=0, ge=0, le=MAX_INT32)
    checkpoint_every: int = Field(default=50, ge=1, le=1_000_000)
    log_every: int = Field(default=10, ge=1, le=1_000_000)
    world_size: int = Field(
        default=1, ge=1, le=64, description="training processes (one per GPU on GPU workers)"
    )
    max_restarts: int = Field(
        default=2, ge=0, le=20, description="restarts of the process group after a rank dies"
    )
    nodes: int = Field(
        default=1, ge=1, le=64, description=">1: a Kubeflow TrainJob (compute gpu, when enabled)"
    )
    data_lanes: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="sharded data: lanes (default world_size); keep it to reproduce a run",
    )
    shuffle_buffer: int = Field(
        default=4096, ge=1, le=10_000_000, description="samples held for shuffling shards"
    )
    prefetch_shards: int = Field(default=2, ge=1, le=64)


class AnalyzeParams(Strict):
    per_layer: bool = True


TECHNIQUE_PARAMS: dict[str, type[Strict]] = {
    "quantsim": QuantsimParams,
    "ptq": PtqParams,
    "autoquant": AutoquantParams,
    "qat": QatParams,
    "analyze": AnalyzeParams,
}


def _spec_rules() -> dict[str, Any]:
    """JobSpec._check's rules as JSON Schema (see service.schemas.common.PRESIGNED_PAIR: why)."""

    def null(*names: str) -> dict[str, Any]:
        return {"properties": {name: {"type": "null"} for name in names}}

    return {
        "allOf": [
            {"anyOf": [{"properties": {"technique": {"enum": [t for t in TECHNIQUE_PARAMS if t != "autoquant"]}}},
                       {"required": ["allowed_accuracy_drop"], "properties": {"allowed_accuracy_drop": {"type": "number"}}}]},
            {"anyOf": [null("quantsim_config"), null("preset")]},
            {"anyOf": [null("train_dataset_id"), {"properties": {"technique": {"const": "qat"}}}]},
            {"anyOf": [{"properties": {"technique": {"const": technique}, "params": model.model_json_schema()}}
                       for technique, model in TECHNIQUE_PARAMS.items()]},
        ]
    }  # fmt: skip


class JobSpec(Strict):
    """What to run (spec_version 1). Stored with the job; the worker reads exactly this.

    >>> JobSpec(model_id="0" * 26, calib_dataset_id="1" * 26, technique="ptq").params
    {'steps': ['bn_fold', 'cle'], 'adaround_iterations': 1000}
    """

    model_config = ConfigDict(json_schema_extra=_spec_rules())

    spec_version: Literal[1] = 1
    model_id: ResourceId
    model_version: int | None = Field(
        default=None, ge=1, le=MAX_INT32, description="null = the latest ready version"
    )
    calib_dataset_id: ResourceId
    eval_dataset_id: ResourceId | None = None
    train_dataset_id: ResourceId | None = Field(
        default=None,
        description="qat: the training data (a dataset file or a sharded dataset); default: calibration data",
    )
    technique: Technique
    params: JsonObject = Field(default={}, description="technique parameters; see the *Params schemas")
    param_bw: int = Field(default=8, ge=2, le=16)
    output_bw: int = Field(default=8, ge=4, le=32)
    scheme: Literal["min_max", "sqnr", "mse", "percentile"] = "min_max"
    quantsim_config: JsonObject | None = None
    preset: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")] | None = None
    encodings_format: Literal["0.6.1", "1.0.0", "2.0.0"] = "1.0.0"
    eval_metric: Literal["accuracy", "cosine", "mse"] | None = None
    allowed_accuracy_drop: float | None = Field(default=None, ge=0, le=1)
    compute: Literal["cpu", "gpu"] = "cpu"
    priority: int = Field(default=5, ge=0, le=9)
    name: str | None = Field(default=None, max_length=200, description="a name people give the job")
    labels: dict[LabelKey, LabelValue] = Field(
        default={},
        max_length=32,
        description="key/value labels (keys: letters, digits, ._/-)",
        json_schema_extra={"additionalProperties": False},  # keys match the pattern (patternProperties)
    )

    @model_validator(mode="after")
    def _check(self) -> JobSpec:
        self.params = TECHNIQUE_PARAMS[self.technique].model_validate(self.params).model_dump()
        if self.quantsim_config is not None and self.preset is not None:
            raise ValueError("give either quantsim_config or preset, not both")
        if self.train_dataset_id is not None and self.technique != "qat":
            raise ValueError("train_dataset_id is used by technique 'qat' only")
        if self.technique == "autoquant" and self.allowed_accuracy_drop is None:
            raise ValueError("technique 'autoquant' needs allowed_accuracy_drop (e.g. 0.01)")
        return self


JobCreate = JobSpec


class JobSpecDraft(JobSpec):
    """A spec checked before its inputs exist (``POST /v1/jobs/validate``, the client's dry run before
    uploading): everything but the model and calibration references, which the real create checks."""

    model_id: ResourceId | None = None  # type: ignore[assignment]
    calib_dataset_id: ResourceId | None = None  # type: ignore[assignment]


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelling", "cancelled"]


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    status: JobStatus
    stage: str | None
    progress: float
    eta_s: float | None
    attempts: int
    technique: str
    compute: str
    priority: int
    spec_version: int
    spec: dict[str, Any]
    model_version_id: str
    calib_dataset_id: str
    eval_dataset_id: str | None
    schedule_id: str | None
    rerun_of: str | None
    metrics: dict[str, Any] | None
    error: dict[str, Any] | None
    cancel_requested: bool
    device: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # The version number the job quantizes and its content hash: versions are reused for identical
    # bytes, so the hash says which file ran. Filled by get, list and cancel; None in create's and
    # rerun's responses (the create's hot path has no sha256 at hand; the next read has it).
    model_version: int | None = None
    model_sha256: str | None = None


class JobEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    from_status: str | None
    to_status: str
    stage: str | None
    progress: float | None
    message: str
    created_at: datetime


class JobLogRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    level: str
    message: str
    created_at: datetime


class ArtifactRead(BaseModel):
    name: str
    size: int
    sha256: str | None
    content_type: str
    url: str
    expires_at: datetime
