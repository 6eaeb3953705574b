"""Metrics JSON -> comparison tables: targets, aliases, AutoQuant stages, and tolerance of odd shapes."""

from __future__ import annotations

import pytest

from service.dashboard.metrics_table import comparison


def test_targets_and_drop() -> None:
    table = comparison({"metric": "accuracy", "fp32": 0.98, "quantsim": 0.97, "ort": 0.96, "sqnr_db": 31.5})
    (row,) = table.rows
    assert row.values == (0.98, 0.97, 0.96)
    assert row.drop == pytest.approx(0.02)
    assert table.other == [("sqnr_db", 31.5)]


def test_nested_evaluation_and_autoquant_stages() -> None:
    table = comparison(
        {
            "eval_metric": "cosine",
            "evaluation": {"fp32": 1.0, "simulated": 0.9},
            "autoquant": {"stages": [{"name": "bn_fold", "sim": 0.8, "accepted": False}, {"sim": 0.95}]},
        }
    )
    assert table.metric == "cosine" and table.rows[0].values == (1.0, 0.9, None)
    assert [(s.label, s.values[1], s.accepted) for s in table.stages] == [
        ("bn_fold", 0.8, False),
        ("stage 2", 0.95, None),
    ]


def test_worker_shape_names_its_metric_inside_evaluation() -> None:
    table = comparison({"evaluation": {"metric": "accuracy", "fp32": 0.99, "sim": 0.98, "onnxruntime": 0.97}})
    assert table.metric == "accuracy" and table.rows[0].label == "accuracy"
    assert table.rows[0].values == (0.99, 0.98, 0.97)


@pytest.mark.parametrize(
    "odd", [None, [], {"fp32": "high"}, {"stages": "x"}, {"stages": [1, None]}, {"x": True}]
)
def test_odd_shapes_render_nothing_rather_than_fail(odd: object) -> None:
    assert comparison(odd).empty()  # type: ignore[arg-type]
