"""The ``ptq`` technique through the pipeline's own stages (prepare → technique → evaluate) on the
digits example, in process: each step the job spec names is applied to the sim the job exports."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from core.errors import ConfigError
from tests.worker.techniques.conftest import Progress
from worker.pipeline.context import JobContext
from worker.pipeline.evaluate import evaluate
from worker.techniques.ptq import run_ptq


def _context(prepared: JobContext, **spec: Any) -> JobContext:
    # run_ptq works on a copy of ctx.prepared, so one prepared model serves every spec.
    return dataclasses.replace(prepared, spec={"technique": "ptq", **spec}, monitor=Progress())


def _output_mse(ctx: JobContext, sim: Any) -> float:
    x = torch.as_tensor(next(iter(ctx.evaluation.inputs.values()))[:256])
    with torch.no_grad():
        return float(((sim.model(x) - ctx.prepared(x)) ** 2).mean())


def test_bias_correction_reduces_quantization_error(prepared: JobContext) -> None:
    """Given W4 PTQ after BN folding, When the spec adds bias_correction, Then every layer's bias is
    corrected and the sim's output error against FP32 is lower than without it."""
    plain = _context(prepared, param_bw=4, params={"steps": ["bn_fold"]})
    corrected = _context(
        prepared, param_bw=4, params={"steps": ["bn_fold", "bias_correction"], "bias_correction_samples": 128}
    )
    base = run_ptq(plain)
    result = run_ptq(corrected)
    notes = result.metrics["ptq"]["bias_correction"]
    assert len(notes["empirical"]) == 4 and notes["analytical"] == []
    assert _output_mse(corrected, result.sim) < _output_mse(plain, base.sim)
    metrics = evaluate(result.sim, corrected.prepared, corrected.evaluation, None, "cpu", None)
    assert metrics["drop"] < 0.05, metrics


def test_bn_reestimation_recomputes_statistics_on_the_quantized_model(prepared: JobContext) -> None:
    """Given W4 PTQ without folding, When the spec asks for bn_reestimation, Then each BatchNorm of the
    exported sim holds new statistics (different from the FP32 model's) and accuracy holds."""
    ctx = _context(prepared, param_bw=4, params={"steps": ["bn_reestimation"], "bn_reestimation_batches": 8})
    result = run_ptq(ctx)
    layers = result.metrics["ptq"]["bn_reestimation"]["layers"]
    assert len(layers) == 3
    fp_modules = dict(ctx.prepared.named_modules())
    sim_modules = dict(result.sim.model.named_modules())
    for name in layers:
        assert not torch.allclose(sim_modules[name].running_mean, fp_modules[name].running_mean)
    metrics = evaluate(result.sim, ctx.prepared, ctx.evaluation, None, "cpu", None)
    assert metrics["drop"] < 0.05, metrics


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"steps": ["cle", "bn_reestimation"]}, "bn_reestimation"),
        (
            {"steps": ["bias_correction"], "bias_correction_method": "exact"},
            "accepted: empirical, analytical",
        ),
        ({"steps": ["magic"]}, "available:"),
    ],
)
def test_invalid_ptq_spec_is_a_config_error(prepared: JobContext, params: dict, needle: str) -> None:
    ctx = _context(prepared, params=params)
    with pytest.raises(ConfigError, match=needle):
        run_ptq(ctx)


def test_outlier_clip_step_runs_on_the_calibrated_sim(prepared: JobContext) -> None:
    """Given a job whose steps are bn_fold then outlier_clip, When it runs, Then the search ran on the
    calibrated sim (its notes count what it searched and clipped), every activation quantizer it clipped
    is frozen at its new range, and accuracy holds."""
    ctx = _context(prepared, params={"steps": ["bn_fold", "outlier_clip"]})
    result = run_ptq(ctx)
    notes = result.metrics["ptq"]["outlier_clip"]
    assert notes["searched"] >= notes["clipped"] >= 0
    frozen = [k for k, q in result.sim.activation_quantizers().items() if q.frozen]
    assert len(frozen) == notes["clipped"]
    metrics = evaluate(result.sim, ctx.prepared, ctx.evaluation, None, "cpu", None)
    assert metrics["drop"] < 0.05, metrics
