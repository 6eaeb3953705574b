"""What a PTQ job's steps did and what an analyze job found, read from the job's metrics JSON.

The worker stores (worker/techniques/ptq.py, analyze.py):

- ``ptq_steps``: the steps in the order asked, and ``ptq``: one note per step that ran, a string
  (``cle``, ``bn_fold``) or a dict: ``{"layers", "seconds"}`` (seq_mse, adaround), ``{"empirical",
  "analytical"}`` layer-name lists (bias_correction), ``{"layers"}`` (bn_reestimation; names);
- ``analysis``: ``{"metric", "global": {"fp32", "weights_only", "activations_only", "quantized"},
  "top": [{"rank", "layer", "score", "action"?}, ...]}``, the QuantAnalyzer's most sensitive layers.

Anything else is tolerated (older jobs, other shapes): a note shows as compact text, a bad row is skipped.

>>> [(s.step, s.note) for s in ptq_notes({"ptq_steps": ["cle", "adaround"],
...     "ptq": {"cle": "bn folded and equalized", "adaround": {"layers": 3, "seconds": 4.5}}})]
[('cle', 'bn folded and equalized'), ('adaround', '3 layers in 4.5 s')]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOP_LAYERS = 5
GLOBAL_LABELS = (("fp32", "FP32"), ("weights_only", "Weights quantized only"),
                 ("activations_only", "Activations quantized only"), ("quantized", "Fully quantized"))  # fmt: skip


@dataclass(frozen=True)
class StepNote:
    step: str
    note: str


def _count(value: Any) -> int | None:
    if isinstance(value, list):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _describe(step: str, note: Any) -> str:
    if isinstance(note, str):
        return note
    if not isinstance(note, dict):
        return "done"
    layers, seconds = _count(note.get("layers")), note.get("seconds")
    if step == "bias_correction":
        parts = [f"{kind} on {n} layers" for kind in ("empirical", "analytical")
                 if (n := _count(note.get(kind))) is not None]  # fmt: skip
        return ", ".join(parts) or "done"
    if layers is not None:
        text = f"{layers} layers" if step != "bn_reestimation" else f"{layers} BatchNorm layers re-estimated"
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            text += f" in {seconds:.1f} s"
        return text
    return ", ".join(f"{k}: {v}" for k, v in note.items()) or "done"


def ptq_notes(metrics: dict[str, Any] | None) -> list[StepNote]:
    """One row per PTQ step, in the order the job asked for them (empty for other techniques)."""
    if not isinstance(metrics, dict):
        return []
    notes = metrics.get("ptq")
    notes = notes if isinstance(notes, dict) else {}
    steps = metrics.get("ptq_steps")
    order = [str(s) for s in steps] if isinstance(steps, list) else list(notes)
    out = []
    for step in order:
        if step in notes:
            out.append(StepNote(step, _describe(step, notes[step])))
        elif step == "bn_fold" and "cle" in notes:
            out.append(StepNote(step, "folded as part of cle"))  # the worker folds inside CLE
        else:
            out.append(StepNote(step, "no note recorded"))
    return out


@dataclass(frozen=True)
class LayerRow:
    rank: int
    layer: str
    score: float
    action: str


@dataclass
class Analysis:
    metric: str
    figures: list[tuple[str, float]] = field(default_factory=list)
    top: list[LayerRow] = field(default_factory=list)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def analysis(metrics: dict[str, Any] | None, limit: int = TOP_LAYERS) -> Analysis | None:
    """The analyzer's global figures and its ``limit`` most sensitive layers; None without an analysis."""
    found = metrics.get("analysis") if isinstance(metrics, dict) else None
    if not isinstance(found, dict):
        return None
    result = Analysis(metric=str(found.get("metric") or "metric"))
    figures = found.get("global")
    if isinstance(figures, dict):
        result.figures = [
            (label, v) for key, label in GLOBAL_LABELS if (v := _num(figures.get(key))) is not None
        ]
    rows = found.get("top")
    for i, row in enumerate(rows if isinstance(rows, list) else []):
        if not isinstance(row, dict) or _num(row.get("score")) is None or not row.get("layer"):
            continue
        rank = row.get("rank")
        order = rank if isinstance(rank, int) else i + 1
        result.top.append(
            LayerRow(order, str(row["layer"]), float(row["score"]), str(row.get("action") or ""))
        )
    result.top = sorted(result.top, key=lambda r: r.rank)[:limit]
    return result
