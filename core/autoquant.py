"""AutoQuant: try PTQ techniques in a sensible order and stop when the model meets the accuracy target.

The stages are small objects registered in order (core/autoquant_stages.py: prepare, scheme selection,
W32 check, BN fold, CLE, SeqMSE, AdaRound; core/autoquant_fallbacks.py: per-channel fallback, mixed
precision); each stage is recorded with its score and time, target = FP32 score − allowed drop. The
first candidate stage meeting the target stops the run; otherwise the best candidate is returned.

``eval_fn(model) -> float`` is the user's metric (higher is better); without one, a label-free metric is
used: the mean cosine similarity of the outputs to the FP32 model's (1.0 = identical).
With ``cache_dir``, stage results (scores in JSON, quantized states in safetensors) are cached, each
stage under its own key (its parent's key and its own settings), so a re-run after a crash resumes where
it stopped and a changed stage setting recomputes only that stage and the ones after it.

>>> result = autoquant(model, calib, eval_fn=accuracy, allowed_accuracy_drop=0.01,
...                    param_bw=4, out_dir="out", cache_dir=".lowbit/aq")       # doctest: +SKIP
>>> result.best_stage, result.best_score, result.target_met                      # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

import core.autoquant_fallbacks  # noqa: F401  (registers the fallback stages)
from core.autoquant_prepare import label_free_metric
from core.autoquant_report import write_reports
from core.autoquant_run import AutoQuantRun, CancelFn, EvalFn, ProgressFn, RunInputs, StageResult
from core.autoquant_stages import pipeline
from core.errors import ConfigError
from core.ptq.adaround import AdaroundConfig
from core.ptq.seq_mse import SeqMseConfig

__all__ = ["AutoQuantResult", "StageResult", "autoquant", "label_free_metric"]

DEFAULT_SCHEME_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("min_max", "min_max"),
    ("sqnr", "min_max"),
    ("min_max", "sqnr"),
    ("sqnr", "sqnr"),
)


@dataclass
class AutoQuantResult:
    """Outcome of a run. ``sim`` is the QuantSim of ``best_stage`` (None when the target is unreachable)."""

    fp32_score: float
    target: float
    allowed_accuracy_drop: float
    metric: str
    stages: list[StageResult]
    best_stage: str | None
    best_score: float | None
    target_met: bool
    reachable: bool
    message: str
    settings: dict[str, Any]
    seconds: float = 0.0
    sim: Any = None
    report_json: Path | None = None
    report_html: Path | None = None
    export: Any = None

    def to_report(self) -> dict[str, Any]:
        fields = {
            k: v for k, v in asdict(self).items() if k not in ("sim", "export", "report_json", "report_html")
        }
        return fields


def autoquant(
    model: nn.Module | Any,
    calib_data: Any,
    eval_fn: EvalFn | None = None,
    allowed_accuracy_drop: float = 0.01,
    *,
    param_bw: int = 8,
    output_bw: int = 8,
    config: Any = None,
    per_channel: bool | None = None,
    per_channel_fallback: bool = True,
    scheme_candidates: tuple[tuple[str, str], ...] | None = None,
    adaround: AdaroundConfig | None = None,
    seq_mse: SeqMseConfig | None = SeqMseConfig(),
    mixed_precision: bool = True,
    mixed_precision_bw: tuple[int, int] = (8, 16),
    eval_data: Any = None,
    num_calib_samples: int = 2000,
    batch_size: int = 32,
    example_inputs: tuple[Any, ...] | None = None,
    out_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    export: bool = True,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    deployed_score: Callable[[Any], float] | None = None,
) -> AutoQuantResult:
    """Run AutoQuant (see the module docstring). ``mixed_precision_bw`` = (param, activation) bitwidths
    that sensitive modules are raised to. ``per_channel_fallback``: with ``per_channel=False`` and a
    config whose weights are per-channel, try per-channel weights before mixed precision. Writes reports
    and the exported model into ``out_dir`` when given. Raises CancelledError when ``cancel()`` returns
    True (checked between stages and in AdaRound).

    ``deployed_score(sim) -> float`` scores what ships (e.g. the exported QDQ model in ONNX Runtime,
    core.deployed_score); when given, each stage meets the target only if the deployed model does,
    and the sim's own score stays beside it in the stage's details."""
    if allowed_accuracy_drop < 0:
        raise ConfigError(f"allowed_accuracy_drop must be >= 0, got {allowed_accuracy_drop}")
    start = time.perf_counter()
    inputs = RunInputs(
        model, calib_data, eval_fn, eval_data, num_calib_samples, batch_size, example_inputs, cache_dir
    )
    run = AutoQuantRun(
        inputs=inputs,
        param_bw=param_bw,
        output_bw=output_bw,
        config=config,
        per_channel=per_channel,
        per_channel_fallback=per_channel_fallback,
        scheme_candidates=scheme_candidates or DEFAULT_SCHEME_CANDIDATES,
        adaround=adaround or AdaroundConfig(),
        seq_mse=seq_mse,
        mixed_precision=mixed_precision,
        mixed_precision_bw=mixed_precision_bw,
        allowed_accuracy_drop=allowed_accuracy_drop,
        progress=progress,
        cancel=cancel,
        deployed_score=deployed_score,
    )
    for stage in pipeline():
        if stage.applies(run):
            stage.execute(run)
    result = _result(run, time.perf_counter() - start)
    if out_dir is not None:
        if export and result.sim is not None:
            result.export = result.sim.export(out_dir, prefix="model")
        result.report_json, result.report_html = write_reports(out_dir, result.to_report())
    return result


def _result(run: AutoQuantRun, seconds: float) -> AutoQuantResult:
    best = run.best
    best_stage, best_score = (best.name, best.score) if best is not None else (None, None)
    if not run.reachable:
        message = (
            f"target {run.target:.4f} is unreachable even with float weights (W32A{run.output_bw} scored "
            f"{run.w32_score:.4f}): quantization-aware training or a higher activation bitwidth is needed"
        )
    elif run.met:
        message = f"target met at stage {best_stage} ({best_score:.4f} >= {run.target:.4f})"
    else:
        message = f"target {run.target:.4f} not met; closest: stage {best_stage} with {best_score:.4f}"
    return AutoQuantResult(
        fp32_score=run.fp_score,
        target=run.target,
        allowed_accuracy_drop=run.allowed_accuracy_drop,
        metric=run.metric,
        stages=run.stages,
        best_stage=best_stage,
        best_score=best_score,
        target_met=run.met,
        reachable=run.reachable,
        message=message,
        settings=run.settings,
        seconds=seconds,
        sim=best.sim if best is not None else None,
    )
