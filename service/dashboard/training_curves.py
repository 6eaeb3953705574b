"""QAT training curves (``metrics.qat.curves``: loss and learning rate per K steps, the evaluation
metric) as small inline SVG polylines for the job page — no JavaScript, no plotting library."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

WIDTH, HEIGHT, PAD = 320.0, 120.0, 6.0


@dataclass(frozen=True)
class Curve:
    title: str
    points: str  # SVG polyline "x,y x,y ..." in a WIDTH x HEIGHT box
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    last: float


def _curve(title: str, xs: list[Any], ys: list[Any]) -> Curve | None:
    pairs = [
        (float(x), float(y))
        for x, y in zip(xs, ys, strict=False)
        if isinstance(y, int | float) and math.isfinite(y)
    ]
    if not pairs:
        return None
    x0, x1 = min(p[0] for p in pairs), max(p[0] for p in pairs)
    y0, y1 = min(p[1] for p in pairs), max(p[1] for p in pairs)
    sx = (WIDTH - 2 * PAD) / (x1 - x0 or 1.0)
    sy = (HEIGHT - 2 * PAD) / (y1 - y0 or 1.0)
    points = " ".join(f"{PAD + (x - x0) * sx:.1f},{HEIGHT - PAD - (y - y0) * sy:.1f}" for x, y in pairs)
    return Curve(title, points, (x0, x1), (y0, y1), pairs[-1][1])


def training_curves(metrics: dict[str, Any] | None) -> list[Curve]:
    """The curves a QAT job recorded (empty for other jobs)."""
    curves = ((metrics or {}).get("qat") or {}).get("curves") or {}
    if not isinstance(curves, dict):
        return []
    found = [
        _curve("Training loss", curves.get("step") or [], curves.get("loss") or []),
        _curve("Learning rate", curves.get("step") or [], curves.get("lr") or []),
        _curve("Evaluation metric", curves.get("eval_step") or [], curves.get("eval_metric") or []),
    ]
    return [c for c in found if c is not None]
