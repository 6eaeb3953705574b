"""Metrics that are always valid JSON: NaN and ±Infinity become ``null``, with a note naming where.

Python's ``json`` writes ``NaN``/``Infinity``, which is not JSON: PostgreSQL's json type refuses it
(``invalid input syntax for type json ... Token "NaN"``) and most JSON readers do too. A training loss
that diverged, or a loop that ran no step, is a legitimate outcome; storing it must never fail a job.

>>> clean, notes = finite_json({"qat": {"final_loss": float("nan"), "steps": 3}, "x": [1.0, float("inf")]})
>>> clean
{'qat': {'final_loss': None, 'steps': 3}, 'x': [1.0, None]}
>>> notes
['qat.final_loss was nan; stored as null', 'x[1] was inf; stored as null']
>>> with_notes({"loss": float("-inf"), "notes": ["kept"]})
{'loss': None, 'notes': ['kept', 'loss was -inf; stored as null']}
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_json(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """``value`` with every non-finite float replaced by None, and one note per replacement."""
    notes: list[str] = []

    def walk(v: Any, where: str) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            notes.append(f"{where or 'value'} was {v}; stored as null")
            return None
        if isinstance(v, dict):
            return {k: walk(item, f"{where}.{k}" if where else str(k)) for k, item in v.items()}
        if isinstance(v, list | tuple):
            return [walk(item, f"{where}[{i}]") for i, item in enumerate(v)]
        return v

    return walk(value, path), notes


def with_notes(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` made finite, the notes appended to its ``notes`` list (created when needed)."""
    clean, notes = finite_json(metrics)
    if notes:
        clean["notes"] = [*(clean.get("notes") or []), *notes]
    return dict(clean)


def dumps_finite(value: Any) -> str:
    """``json.dumps`` that never writes NaN/Infinity (SQLAlchemy's ``json_serializer``): the common
    case is one strict dump; only a value holding a non-finite number is walked and cleaned."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(finite_json(value)[0], allow_nan=False)
