"""`lowbit analyze MODEL --calib DATA [--eval DATA] --out DIR`: the QuantAnalyzer report on local files.

With ``--eval`` data that holds ``labels`` the metric is top-1 accuracy of the first output;
otherwise it is label-free (``--metric cosine|sqnr`` of outputs against FP32).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from core.commands.exit_codes import OK


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("analyze", help="per-layer quantization analysis with an HTML report")
    p.add_argument("model", help="model file (.pt2 or .onnx)")
    p.add_argument("--calib", required=True, help="calibration data (.npz or .safetensors)")
    p.add_argument("--eval", dest="eval_data", help="evaluation data; with 'labels' the metric is accuracy")
    p.add_argument("--out", required=True, help="output directory for JSON files, plots and report.html")
    p.add_argument("--config", default="default", help="quantsim config: preset name or JSON path")
    p.add_argument("--param-bw", type=int, default=8)
    p.add_argument("--output-bw", type=int, default=8)
    p.add_argument(
        "--scheme", default="min_max", help="range setting scheme (min_max, sqnr, mse, percentile)"
    )
    p.add_argument("--metric", default="cosine", choices=["cosine", "sqnr"], help="label-free metric")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-batches", type=int, default=4, help="batches used for calibration and evaluation")
    p.add_argument("--per-quantizer", action="store_true", help="also rank single quantizers (slower)")
    p.set_defaults(func=run)


def accuracy_fn(batches: list[tuple[tuple[torch.Tensor, ...], torch.Tensor]]) -> Any:
    """Top-1 accuracy of the model's first output over labelled batches."""
    from core.analysis.metrics import flat_outputs

    def accuracy(model: torch.nn.Module) -> float:
        correct = total = 0
        with torch.no_grad():
            for inputs, labels in batches:
                pred = flat_outputs(model(*inputs)).argmax(dim=1)
                correct += int((pred == labels.reshape(-1).long()).sum())
                total += labels.shape[0]
        return correct / max(1, total)

    return accuracy


def run(args: argparse.Namespace) -> int:
    from core.analysis import QuantAnalyzer
    from core.io import load_data, load_model
    from core.quantsim import QuantSim

    loaded = load_model(args.model, calib=args.calib)
    calib = load_data(args.calib, loaded.input_names).for_model(loaded)
    evaluation = load_data(args.eval_data, loaded.input_names).for_model(loaded) if args.eval_data else None
    eval_fn = None
    if evaluation is not None and evaluation.labels is not None:
        labelled = list(evaluation.labeled_batches(args.batch_size))[: args.num_batches]
        eval_fn = accuracy_fn(labelled)
    sim = QuantSim(
        loaded,
        config=args.config,
        param_bw=args.param_bw,
        output_bw=args.output_bw,
        scheme=args.scheme,
    )
    analyzer = QuantAnalyzer(
        sim,
        calib,
        eval_fn=eval_fn,
        eval_data=evaluation,
        metric=args.metric,
        batch_size=args.batch_size,
        num_batches=args.num_batches,
        per_quantizer=args.per_quantizer,
    )
    result = analyzer.analyze(args.out)
    top = [{k: row[k] for k in ("rank", "layer", "score", "action")} for row in result.ranking[:5]]
    print(
        json.dumps(
            {
                "metric": result.metric_name,
                "global": result.global_metrics,
                "top_layers": top,
                "report": f"{args.out}/report.html",
            },
            indent=1,
        ),
        file=sys.stdout,
    )
    return OK
