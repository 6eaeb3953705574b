"""PTQ step notes and the analyzer's top layers as the job page reads them from a job's metrics."""

from __future__ import annotations

from service.dashboard.technique_notes import analysis, ptq_notes


def test_ptq_notes_follow_the_asked_order_and_describe_each_worker_note_shape() -> None:
    metrics = {
        "ptq_steps": ["bn_fold", "cle", "seq_mse", "adaround", "bias_correction", "bn_reestimation"],
        "ptq": {
            "cle": "bn folded and equalized",
            "seq_mse": {"layers": 4, "seconds": 1.25},
            "adaround": {"layers": 4, "seconds": 12.0},
            "bias_correction": {"empirical": ["a", "b", "c"], "analytical": []},
            "bn_reestimation": {"layers": ["bn1", "bn2"]},
        },
    }
    assert [(n.step, n.note) for n in ptq_notes(metrics)] == [
        ("bn_fold", "folded as part of cle"),
        ("cle", "bn folded and equalized"),
        ("seq_mse", "4 layers in 1.2 s"),
        ("adaround", "4 layers in 12.0 s"),
        ("bias_correction", "empirical on 3 layers, analytical on 0 layers"),
        ("bn_reestimation", "2 BatchNorm layers re-estimated"),
    ]
    # A step asked for without a note, and jobs of other techniques (or none yet).
    assert [(n.step, n.note) for n in ptq_notes({"ptq_steps": ["bn_fold"], "ptq": {}})] == [
        ("bn_fold", "no note recorded")
    ]
    assert ptq_notes({"evaluation": {"fp32": 0.9}}) == [] and ptq_notes(None) == []


def test_analysis_keeps_the_five_most_sensitive_layers_and_skips_bad_rows() -> None:
    top = [{"rank": r, "layer": f"l{r}", "score": 1 / r, "action": "keep_fp32"} for r in (3, 1, 2, 4, 5, 6)]
    top.insert(2, {"rank": 0, "layer": "broken", "score": "high"})  # not a number: skipped
    found = analysis(
        {"analysis": {"metric": "cosine", "global": {"fp32": 1.0, "quantized": 0.93}, "top": top}}
    )
    assert found is not None and found.metric == "cosine"
    assert [(r.rank, r.layer, r.action) for r in found.top] == [
        (i, f"l{i}", "keep_fp32") for i in range(1, 6)
    ]
    assert found.figures == [("FP32", 1.0), ("Fully quantized", 0.93)]
    assert analysis({"ptq": {}}) is None and analysis(None) is None
