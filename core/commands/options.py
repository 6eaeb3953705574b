"""Command-line options shared by the engine commands (quantize, autoquant, export, ...)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def add_quant_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quantization")
    g.add_argument(
        "--config",
        default="default",
        help="quantsim config: preset name (default, htp_v73, onnxruntime_cpu) or AIMET-format JSON path",
    )
    g.add_argument("--param-bw", type=int, default=8, help="weight bitwidth (2-16; default 8)")
    g.add_argument("--output-bw", type=int, default=8, help="activation bitwidth (2-16; default 8)")
    g.add_argument(
        "--scheme",
        default="sqnr",
        help="range setting for weights and activations: min_max, sqnr (tf_enhanced), mse, percentile (default sqnr)",
    )
    g.add_argument("--param-scheme", help="range setting for weights only (overrides --scheme)")
    g.add_argument("--act-scheme", help="range setting for activations only (overrides --scheme)")
    pc = g.add_mutually_exclusive_group()
    pc.add_argument(
        "--per-channel", dest="per_channel", action="store_true", default=None, help="per-channel weights"
    )
    pc.add_argument("--per-tensor", dest="per_channel", action="store_false", help="per-tensor weights")
    g.add_argument("--num-calib", type=int, default=512, help="calibration samples to use (default 512)")
    g.add_argument("--batch-size", type=int, default=32)


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--encoding-version",
        default="1.0.0",
        choices=["0.6.1", "1.0.0", "2.0.0"],
        help="AIMET encodings format (default 1.0.0)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


def sim_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "config": args.config,
        "param_bw": args.param_bw,
        "output_bw": args.output_bw,
        "scheme": args.scheme,
        "param_scheme": args.param_scheme,
        "act_scheme": args.act_scheme,
        "per_channel": args.per_channel,
    }


def progress_bar(desc: str, quiet: bool = False) -> tuple[Callable[[float], None], Callable[[], None]]:
    """A tqdm bar on stderr driven by fractions in [0, 1]; (update, close). Silent when stderr is not a TTY."""
    if quiet or not sys.stderr.isatty():
        return (lambda fraction: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(
        total=100,
        desc=desc,
        file=sys.stderr,
        leave=False,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}",
    )

    def update(fraction: float) -> None:
        bar.n = round(100 * max(0.0, min(1.0, fraction)))
        bar.refresh()

    return update, bar.close
