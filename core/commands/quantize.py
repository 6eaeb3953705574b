"""`lowbit quantize MODEL --calib DATA [--eval DATA] --out DIR`: QuantSim → export → results table.

Writes model.onnx, model.encodings, model_qdq.onnx and metrics.json to --out, then prints
FP32 vs simulated vs ONNX Runtime (accuracy with labelled --eval data, else cosine vs FP32).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from core.commands.exit_codes import OK
from core.commands.options import add_output_options, add_quant_options, progress_bar, sim_kwargs
from core.ptq.recipe import parse_techniques, quantsim_with_ptq


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "quantize", help="simulate quantization, export ONNX + encodings, report accuracy"
    )
    p.add_argument("model", help="model file (.pt2 or .onnx)")
    p.add_argument(
        "--calib", required=True, help="calibration data (.npz or .safetensors), one array per model input"
    )
    p.add_argument(
        "--eval", dest="eval_data", help="evaluation data; with a 'labels' array the metric is accuracy"
    )
    add_quant_options(p)
    p.add_argument(
        "--ptq",
        help="PTQ techniques to apply, comma-separated: bn_fold, cle, seq_mse, adaround, bias_correction, "
        "outlier_clip (e.g. cle,adaround); cle without adaround is DFQ: CLE then bias correction; outlier_clip "
        "narrows outlier-dominated activation ranges by the output error (transformers)",
    )
    p.add_argument(
        "--quantized-input-passes",
        type=_passes,
        default=0,
        metavar="N",
        help="after calibrating, re-observe activation ranges N times with every quantizer active, so each "
        "range sees the quantized inputs it will get on target (0-8; default 0; 2 helps transformers)",
    )
    add_output_options(p)
    p.set_defaults(func=run)


def _passes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 8:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 8, got {text!r}")
    return value


def load_inputs(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(loaded model, calibration data, evaluation data) with their shapes checked against the model."""
    from core.io import load_data, load_model

    loaded = load_model(args.model, calib=args.calib)
    calib = load_data(args.calib, loaded.input_names).for_model(loaded)
    evald = load_data(args.eval_data, loaded.input_names).for_model(loaded) if args.eval_data else calib
    return loaded, calib, evald


def run(args: argparse.Namespace) -> int:
    from core.quantsim import QuantSim

    t0 = time.perf_counter()
    loaded, calib, evald = load_inputs(args)
    techniques = parse_techniques(getattr(args, "ptq", None))
    ptq_details: dict[str, Any] = {}
    if techniques:  # core/ptq/recipe.py: graph techniques before the sim, AdaRound before calibration
        update, close = progress_bar("ptq")
        sim, ptq_details = quantsim_with_ptq(
            loaded,
            techniques,
            calib,
            sim_kwargs(args),
            num_samples=args.num_calib,
            batch_size=args.batch_size,
            progress=update,
        )
        close()
    else:
        sim = QuantSim(loaded, **sim_kwargs(args))
    update, close = progress_bar("calibrating")
    sim.compute_encodings(
        calib,
        num_batches=max(1, -(-args.num_calib // args.batch_size)),
        batch_size=args.batch_size,
        progress=update,
        quantized_input_passes=args.quantized_input_passes,
    )
    close()
    extra: dict[str, Any] = {"technique": "ptq" if techniques else "quantsim"}
    if args.quantized_input_passes:
        extra["quantized_input_passes"] = args.quantized_input_passes
    if techniques:
        extra["ptq"] = ptq_details
    return finish(args, sim, evald, extra, t0)


def finish(args: argparse.Namespace, sim: Any, evald: Any, extra: dict[str, Any], t0: float) -> int:
    """Export, evaluate, write metrics.json and print the results table (shared by quantize/autoquant)."""
    from core.evaluation import evaluate
    from core.export import export_sim
    from core.graph import inspect_prepared

    out = Path(args.out)
    float_ops = inspect_prepared(sim.fp_model).float_ops  # what `lowbit validate` lists: left in float
    result = export_sim(sim, out, encoding_version=args.encoding_version)
    update, close = progress_bar("evaluating")
    report = evaluate(sim, evald, qdq_path=result.qdq_onnx, progress=update)
    close()
    metrics = {
        **extra,
        "evaluation": report.to_dict(),
        "quantizers": len(sim.quantizers()),
        "param_bw": sim.params.param_bw,
        "output_bw": sim.params.output_bw,
        "encoding_version": args.encoding_version,
        "artifacts": {
            k: str(v)
            for k, v in (
                ("onnx", result.onnx),
                ("encodings", result.encodings),
                ("qdq_onnx", result.qdq_onnx),
            )
            if v
        },
        "float_ops": [issue.op for issue in float_ops],
        "warnings": list(result.warnings),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(report.format_table())
        if float_ops:
            from core.graph import float_ops_summary

            print(f"\n{float_ops_summary([issue.op for issue in float_ops])}")
        print(f"\nwrote {result.onnx}, {result.encodings}, {result.qdq_onnx} and {out / 'metrics.json'}")
    return OK
