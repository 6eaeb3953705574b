"""Turn a job's metrics JSON into the dashboard's comparison tables.

The worker stores ``metrics`` as JSON. The dashboard reads, tolerating absent parts:

- the metric's name under ``metric`` (or ``eval_metric``), e.g. ``"accuracy"``;
- one value per evaluation target at the top level or under ``evaluation``: ``fp32``, ``simulated``
  (aliases ``quantsim``, ``quantized``, ``sim``) and ``onnxruntime`` (aliases ``ort``, ``onnx_runtime``);
- AutoQuant stages as a list under ``stages`` or ``autoquant.stages``: what the worker stores,
  ``{"name", "status", "score", "cached", "seconds"?}`` (status ``met``/``below``/``info``/
  ``unreachable``), or older rows ``{"name" (or "stage"), <targets as above>, "accepted"?}``.

Everything else that is a plain number shows up in an "other figures" list.

>>> comparison({"metric": "accuracy", "fp32": 0.98, "sim": 0.97}).rows[0].values
(0.98, 0.97, None)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COLUMNS = ("FP32", "Simulated", "ONNX Runtime")
_ALIASES: tuple[tuple[str, ...], ...] = (
    ("fp32", "float", "baseline"),
    ("simulated", "quantsim", "quantized", "sim"),
    ("onnxruntime", "ort", "onnx_runtime", "qdq"),
)
_KNOWN = {"metric", "eval_metric", "evaluation", "stages", "autoquant"} | {a for g in _ALIASES for a in g}


@dataclass(frozen=True)
class MetricRow:
    label: str
    values: tuple[float | None, float | None, float | None]
    accepted: bool | None = None

    @property
    def drop(self) -> float | None:
        """FP32 minus the best quantized value available (ONNX Runtime first, then simulated)."""
        fp32, sim, ort = self.values
        quant = ort if ort is not None else sim
        return None if fp32 is None or quant is None else fp32 - quant


@dataclass(frozen=True)
class StageRow:
    """One AutoQuant stage: its score on the job's metric, outcome, time and whether it came from cache."""

    label: str
    score: float | None
    status: str | None
    seconds: float | None
    cached: bool | None


@dataclass
class Comparison:
    metric: str
    rows: list[MetricRow] = field(default_factory=list)
    stages: list[StageRow] = field(default_factory=list)
    target: float | None = None
    message: str = ""
    other: list[tuple[str, Any]] = field(default_factory=list)
    # The deployed QDQ model in ONNX Runtime vs the simulation, and the worker's warning when they disagree.
    agreement: dict[str, float] = field(default_factory=dict)
    warning: str = ""

    def empty(self) -> bool:
        return not (self.rows or self.stages or self.other)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _targets(source: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    found: list[float | None] = []
    for aliases in _ALIASES:
        found.append(next((_num(source[a]) for a in aliases if _num(source.get(a)) is not None), None))
    return found[0], found[1], found[2]


def comparison(metrics: dict[str, Any] | None) -> Comparison:
    """The metrics table of a job (empty when the job has no metrics yet)."""
    if not isinstance(metrics, dict):
        return Comparison(metric="metric")
    evaluation = metrics.get("evaluation")
    # The worker names the metric inside ``evaluation``; older shapes name it at the top level.
    nested = evaluation.get("metric") if isinstance(evaluation, dict) else None
    name = str(metrics.get("metric") or metrics.get("eval_metric") or nested or "metric")
    result = Comparison(metric=name)
    source = evaluation if isinstance(evaluation, dict) else metrics
    values = _targets(source)
    if any(v is not None for v in values):
        result.rows.append(MetricRow(name, values))
    if isinstance(evaluation, dict):
        vs = evaluation.get("sim_vs_onnxruntime")
        if isinstance(vs, dict):
            result.agreement = {
                k: v for k in ("top1_agreement", "sqnr_db") if (v := _num(vs.get(k))) is not None
            }
        result.warning = str(evaluation.get("warning") or "")
    autoquant = metrics.get("autoquant")
    stages = metrics.get("stages")
    if stages is None and isinstance(autoquant, dict):
        stages = autoquant.get("stages")
    for i, stage in enumerate(stages if isinstance(stages, list) else []):
        if not isinstance(stage, dict):
            continue
        result.stages.append(_stage_row(i, stage))
    if isinstance(autoquant, dict):
        result.target = _num(autoquant.get("target"))
        result.message = str(autoquant.get("message") or "")
    for key, value in sorted(metrics.items()):
        if key not in _KNOWN and _num(value) is not None:
            result.other.append((key, value))
    return result


def _stage_row(index: int, stage: dict[str, Any]) -> StageRow:
    label = str(stage.get("name") or stage.get("stage") or f"stage {index + 1}")
    score = _num(stage.get("score"))
    if score is None:  # older rows: one value per evaluation target
        fp32, sim, ort = _targets(stage)
        score = ort if ort is not None else sim if sim is not None else fp32
    status = stage.get("status")
    accepted = stage.get("accepted")
    if status is None and isinstance(accepted, bool):
        status = "met" if accepted else "below"
    cached = stage.get("cached")
    return StageRow(
        label,
        score,
        str(status) if status is not None else None,
        _num(stage.get("seconds")),
        cached if isinstance(cached, bool) else None,
    )
