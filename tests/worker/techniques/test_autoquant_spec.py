"""The autoquant job spec: ``allowed_accuracy_drop: 0`` means zero, not the default."""

from __future__ import annotations

from worker.techniques.autoquant import allowed_drop


def test_zero_allowed_drop_is_zero():
    assert allowed_drop({"allowed_accuracy_drop": 0}) == 0.0
    assert allowed_drop({"allowed_accuracy_drop": 0.02}) == 0.02
    assert allowed_drop({}) == 0.01
