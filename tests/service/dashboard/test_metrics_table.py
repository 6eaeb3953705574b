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
    assert [(s.label, s.score, s.status) for s in table.stages] == [
        ("bn_fold", 0.8, "below"),
        ("stage 2", 0.95, None),
    ]


def test_autoquant_stages_as_the_worker_stores_them() -> None:
    """worker/techniques/autoquant.py stores {name, status, score, cached, seconds} per stage."""
    table = comparison(
        {
            "evaluation": {"metric": "accuracy", "fp32": 0.98, "sim": 0.975},
            "autoquant": {
                "target": 0.97,
                "message": "target met at cle",
                "stages": [
                    {"name": "quantsim", "status": "below", "score": 0.95, "cached": False, "seconds": 1.25},
                    {"name": "cle", "status": "met", "score": 0.975, "cached": True, "seconds": 0.5},
                    {"name": "prepare", "status": "info", "score": None, "cached": False},
                ],
            },
        }
    )
    assert [(s.label, s.score, s.status, s.seconds, s.cached) for s in table.stages] == [
        ("quantsim", 0.95, "below", 1.25, False),
        ("cle", 0.975, "met", 0.5, True),
        ("prepare", None, "info", None, False),
    ]
    assert table.target == 0.97 and table.message == "target met at cle"


def test_worker_shape_names_its_metric_inside_evaluation() -> None:
    table = comparison({"evaluation": {"metric": "accuracy", "fp32": 0.99, "sim": 0.98, "onnxruntime": 0.97}})
    assert table.metric == "accuracy" and table.rows[0].label == "accuracy"
    assert table.rows[0].values == (0.99, 0.98, 0.97)


@pytest.mark.parametrize(
    "odd", [None, [], {"fp32": "high"}, {"stages": "x"}, {"stages": [1, None]}, {"x": True}]
)
def test_odd_shapes_render_nothing_rather_than_fail(odd: object) -> None:
    assert comparison(odd).empty()  # type: ignore[arg-type]


def test_runtime_agreement_and_warning_as_the_worker_stores_them() -> None:
    """worker/pipeline/evaluate.py stores the QDQ model's agreement with the sim and a warning."""
    table = comparison(
        {
            "evaluation": {
                "metric": "accuracy",
                "fp32": 0.99,
                "sim": 0.991,
                "onnxruntime": 0.978,
                "sim_vs_onnxruntime": {"top1_agreement": 0.976, "sqnr_db": 12.2},
                "warning": "ONNX Runtime disagrees with the simulation ...",
            }
        }
    )
    assert table.agreement == {"top1_agreement": 0.976, "sqnr_db": 12.2}
    assert table.warning.startswith("ONNX Runtime disagrees")
    assert comparison({"evaluation": {"fp32": 1.0, "sim": 0.9}}).warning == ""
