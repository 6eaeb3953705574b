"""AutoQuant's prepare stage: the user's model and data → a captured FP32 graph, batches, a metric and
the target; plus the label-free metric used when no ``eval_fn`` is given."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from core.autoquant_run import AutoQuantRun, EvalFn
from core.ptq.calibration_batches import Batch, materialize_batches


def label_free_metric(fp_model: nn.Module, batches: list[Batch]) -> EvalFn:
    """Mean per-sample cosine similarity of a model's outputs to ``fp_model``'s on ``batches``."""
    with torch.no_grad():
        references = [fp_model(*b) for b in batches]

    def score(model: nn.Module) -> float:
        total, count = 0.0, 0
        with torch.no_grad():
            for b, ref in zip(batches, references, strict=True):
                out = model(*b)
                cos = nn.functional.cosine_similarity(
                    out.reshape(len(out), -1), ref.reshape(len(ref), -1), dim=1
                )
                total += float(cos.sum())
                count += len(cos)
        return total / max(count, 1)

    return score


def prepare_run(run: AutoQuantRun) -> None:
    """Fill ``run``'s batches, example, I/O names, FP32 graph, metric, FP32 score, target and settings."""
    from core.graph import prepare_model

    inputs = run.inputs
    run.batches = materialize_batches(inputs.calib_data, inputs.num_calib_samples, inputs.batch_size)
    model, example_inputs = inputs.model, inputs.example_inputs
    if hasattr(model, "graph_source") and hasattr(model, "example_inputs"):
        # A core.io.LoadedModel: capture its program/module, keep its I/O names for export.
        loaded: Any = model
        example_inputs = example_inputs or tuple(loaded.example_inputs)
        run.io_names = {
            "input_names": list(loaded.input_names),
            "output_names": list(loaded.output_names),
            "dynamic_dims": {name: dict(axes) for name, axes in loaded.dynamic_dims.items()},
        }
        model = loaded.graph_source
    first = run.batches[0]
    run.example = example_inputs or tuple(t[:1] if isinstance(t, torch.Tensor) else t for t in first)
    run.fp = prepare_model(model, run.example).eval()
    run.eval_fn, run.metric = inputs.eval_fn, "user eval_fn"
    if run.eval_fn is None:
        run.metric = "label-free: mean cosine similarity to FP32 outputs"
        data = inputs.eval_data
        eval_batches = materialize_batches(data, None, inputs.batch_size) if data is not None else run.batches
        run.eval_fn = label_free_metric(run.fp, eval_batches)
    run.fp_score = run.score(run.fp)
    run.target = run.fp_score - run.allowed_accuracy_drop
    config = run.config
    run.settings = {
        "param_bw": run.param_bw,
        "output_bw": run.output_bw,
        "per_channel": run.per_channel,
        "per_channel_fallback": run.per_channel_fallback,
        "config": config if isinstance(config, str | type(None)) else "custom",
        "scheme_candidates": [list(c) for c in run.scheme_candidates],
        "adaround": asdict(run.adaround),
        "seq_mse": asdict(run.seq_mse) if run.seq_mse is not None else None,
        "mixed_precision": run.mixed_precision,
        "mixed_precision_bw": list(run.mixed_precision_bw),
        "metric": run.metric,
        "allowed_accuracy_drop": run.allowed_accuracy_drop,
    }
