"""``quantsim``: place quantizers from the config and calibrate them on the calibration data."""

from __future__ import annotations

from worker.pipeline.context import JobContext, TechniqueResult
from worker.techniques import register_technique

CALIB_BATCH = 32


def build_sim(ctx: JobContext, module: object | None = None) -> object:
    """A QuantSim of ``module`` (default: the prepared model) on the job's device, from the spec."""
    from core.quantsim import QuantSim

    graph = module if module is not None else ctx.prepared
    sim = QuantSim(graph, ctx.loaded.example_inputs, **ctx.quantsim_kwargs(), prepared=True)
    sim.use_io_of(ctx.loaded)  # the exported files keep the upload's tensor names and dynamic dimensions
    return sim.to(ctx.device)


def calibrate(ctx: JobContext, sim: object, quantized_input_passes: int = 0) -> None:
    """compute_encodings over the calibration data with the job's progress and cancel hooks."""
    sim.compute_encodings(  # type: ignore[attr-defined]
        ctx.calib,
        batch_size=CALIB_BATCH,
        progress=ctx.monitor.progress,
        cancel=ctx.cancel_check,
        quantized_input_passes=quantized_input_passes,
    )


@register_technique("quantsim")
def run_quantsim(ctx: JobContext) -> TechniqueResult:
    """Calibrated QuantSim (optionally with quantized-input passes), nothing else."""
    sim = build_sim(ctx)
    calibrate(ctx, sim, int(ctx.params.get("quantized_input_passes", 0)))
    return TechniqueResult(sim=sim, metrics={"quantizers": len(sim.quantizers())})  # type: ignore[attr-defined]
