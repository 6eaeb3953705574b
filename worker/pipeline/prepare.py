"""Stage 2: load the model and data with the engine and validate the model; a model that cannot be
quantized fails the job with the validator's per-node report."""

from __future__ import annotations

from typing import Any

from core.errors import LowbitError
from worker.pipeline.context import JobContext


class ModelNotQuantizableError(LowbitError):
    """The validator found blocking issues; ``report`` is its per-node report (JSON-ready)."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def prepare_inputs(ctx: JobContext) -> None:
    """Load model and data (``ctx.loaded``, ``ctx.calib``, ``ctx.evaluation``), prepare and validate the model.

    The verdict is ``lowbit validate``'s (core.graph.check_model on the same source): only a model that
    cannot be captured fails the job; ops without a quantized module stay in float and are listed in
    the job's metrics (``float_ops``) and log.
    """
    from core.graph import check_model
    from core.io import load_data, load_model

    assert ctx.model_path is not None and ctx.calib_path is not None  # set by fetch_inputs
    # The calibration data shapes the example inputs: a declared input shape alone sizes nothing.
    ctx.loaded = load_model(ctx.model_path, calib=ctx.calib_path)
    names = ctx.loaded.input_names
    ctx.calib = load_data(ctx.calib_path, names).for_model(ctx.loaded)
    ctx.monitor.progress(0.3)
    if ctx.eval_path is not None:
        ctx.evaluation = load_data(ctx.eval_path, names).for_model(ctx.loaded)
    if ctx.train_path is not None:
        ctx.train = load_data(ctx.train_path, names).for_model(ctx.loaded)
    # A .pt2 is captured from its exported program (graph_source), as the CLI does.
    prepared, report = check_model(ctx.loaded.graph_source, ctx.loaded.example_inputs)
    ctx.monitor.progress(0.9)
    if prepared is None or not report.ok:
        raise ModelNotQuantizableError(
            "the model cannot be captured as uploaded; see error.report for the per-node issues",
            report.to_dict(),
        )
    # The techniques start from this prepared FP32 graph (QuantSim(..., prepared=True) copies it).
    ctx.prepared = prepared
    ctx.metrics["float_ops"] = [issue.op for issue in report.float_ops]
    ctx.metrics["validation"] = {"capture": report.capture, "notes": [n.problem for n in report.notes]}
    ctx.monitor.log(
        f"loaded {ctx.loaded.source_format} model: inputs {names}, "
        f"{ctx.calib.num_samples} calibration samples"
        + (f", {ctx.evaluation.num_samples} evaluation samples" if ctx.evaluation is not None else "")
        + (f"; {report.float_summary()}" if report.float_ops else "")
    )
