"""`lowbit autoquant MODEL --calib DATA [--eval DATA] --allowed-drop 0.01 --out DIR`.

Runs core.autoquant: scheme selection, reachability check, BN fold, CLE, SeqMSE, AdaRound, per-channel
weights when --per-tensor missed and the config allows them, and (optionally) mixed precision, stopping
at the first stage that meets FP32 − allowed drop. The metric is accuracy when --eval data has a
'labels' array, else the cosine similarity of outputs to FP32. Writes the exported model
(model.onnx, model.encodings, model_qdq.onnx), autoquant_report.json/.html to --out.
Exit code 0 when the target is met, 4 (ACCURACY_TARGET_MISSED) otherwise.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from core.commands.exit_codes import ACCURACY_TARGET_MISSED, OK


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("autoquant", help="try PTQ techniques until an accuracy target is met")
    p.add_argument("model", help="model file (.pt2 or .onnx)")
    p.add_argument("--calib", required=True, help="calibration data (.npz or .safetensors)")
    p.add_argument(
        "--eval", dest="eval_data", help="evaluation data; with a 'labels' array the metric is accuracy"
    )
    p.add_argument(
        "--allowed-drop", type=float, default=0.01, help="allowed metric drop vs FP32 (default 0.01)"
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--config", default="default", help="quantsim config preset name or AIMET-format JSON path"
    )
    p.add_argument("--param-bw", type=int, default=8, help="weight bitwidth (default 8)")
    p.add_argument("--output-bw", type=int, default=8, help="activation bitwidth (default 8)")
    pc = p.add_mutually_exclusive_group()
    pc.add_argument("--per-channel", dest="per_channel", action="store_true", default=None)
    pc.add_argument("--per-tensor", dest="per_channel", action="store_false")
    p.add_argument(
        "--no-per-channel-fallback",
        action="store_true",
        help="with --per-tensor, never try the config's per-channel weights when per-tensor misses",
    )
    p.add_argument("--num-calib", type=int, default=2000, help="calibration samples (default 2000)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--adaround-iterations", type=int, default=5000, help="AdaRound iterations per layer")
    p.add_argument("--no-mixed-precision", action="store_true", help="skip the mixed-precision stage")
    p.add_argument("--cache-dir", help="stage cache folder (a re-run resumes from it)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def accuracy_metric(data: Any, batch_size: int = 256) -> Any:
    """eval_fn(model) -> top-1 accuracy on labelled ``data`` (a core.io.CalibrationData)."""
    import torch

    def score(model: Any) -> float:
        correct = total = 0
        with torch.no_grad():
            for inputs, labels in data.labeled_batches(batch_size):
                out = model(*inputs)
                out = out[0] if isinstance(out, tuple | list) else out
                correct += int((out.argmax(-1) == labels.reshape(-1)).sum())
                total += int(labels.numel())
        return correct / max(total, 1)

    return score


def run(args: argparse.Namespace) -> int:
    from core.autoquant import autoquant
    from core.io import load_data, load_model
    from core.ptq.adaround import AdaroundConfig
    from core.runtime_verdict import deployed_scorer

    loaded = load_model(args.model, calib=args.calib)
    calib = load_data(args.calib, loaded.input_names).for_model(loaded)
    evald = load_data(args.eval_data, loaded.input_names).for_model(loaded) if args.eval_data else None
    eval_fn = accuracy_metric(evald) if evald is not None and evald.labels is not None else None

    def show(stage: str, fraction: float) -> None:
        if not args.json and fraction == 0.0:
            print(f"[autoquant] {stage} ...", flush=True)

    result = autoquant(
        loaded,
        calib,
        eval_fn,
        args.allowed_drop,
        param_bw=args.param_bw,
        output_bw=args.output_bw,
        config=args.config,
        per_channel=args.per_channel,
        per_channel_fallback=not args.no_per_channel_fallback,
        adaround=AdaroundConfig(num_iterations=args.adaround_iterations, batch_size=args.batch_size),
        mixed_precision=not args.no_mixed_precision,
        eval_data=evald if eval_fn is None else None,
        num_calib_samples=args.num_calib,
        batch_size=args.batch_size,
        out_dir=args.out,
        cache_dir=args.cache_dir,
        progress=show,
        # With eval data the target is checked on what ships: the QDQ model in ONNX Runtime.
        deployed_score=deployed_scorer(evald) if evald is not None else None,
    )
    if args.json:
        print(json.dumps(result.to_report(), indent=2, default=str))
    else:
        print(f"{'stage':<18}{'score':>10}{'status':>13}{'seconds':>10}")
        for s in result.stages:
            score = "" if s.score is None else f"{s.score:.4f}"
            print(f"{s.name:<18}{score:>10}{s.status:>13}{s.seconds:>10.2f}")
        print(result.message)
        print(f"wrote {result.report_json} and {result.report_html}")
    return OK if result.target_met else ACCURACY_TARGET_MISSED
