"""The job page's QAT curves: metrics.qat.curves → inline SVG polylines (scaled into the box)."""

from __future__ import annotations

from service.dashboard.rendering import make_environment
from service.dashboard.training_curves import HEIGHT, PAD, WIDTH, training_curves


def test_curves_scale_into_the_box_and_render_as_svg() -> None:
    metrics = {"qat": {"curves": {"step": [10, 20, 30], "loss": [2.0, 1.0, float("nan")], "lr": [1e-3, 1e-3, 5e-4],
                                  "eval_step": [30], "eval_metric": [0.9]}}}  # fmt: skip
    loss, lr, evaluation = training_curves(metrics)
    assert loss.points == f"{PAD:.1f},{PAD:.1f} {WIDTH - PAD:.1f},{HEIGHT - PAD:.1f}"  # NaN dropped
    assert lr.y_range == (5e-4, 1e-3) and lr.last == 5e-4
    assert evaluation.title == "Evaluation metric" and evaluation.last == 0.9
    assert training_curves({"evaluation": {}}) == [] and training_curves(None) == []
    html = make_environment().get_template("_training_curves.html").render(curves=[loss, lr, evaluation])
    assert html.count("<polyline") == 3 and 'aria-label="Training loss' in html
