"""PTQ bench (issue 4): CLE / AdaRound accuracy on a MobileNet-style digits net, AdaRound speed, AutoQuant.

Tables:
1. The hard MobileNet-style digits net (ranges spread 10–30× after BN folding, bench/ptq_mobilenet.py):
   every recipe (nearest, CLE through ReLU6, CLE with ReLU6 → ReLU, DFQ, AdaRound, CLE + AdaRound) per
   tensor and per channel, min-max and SQNR, with AIMET 2.42's figures from issue 15 beside them. DFQ's
   bias correction is the analytical one, from the folded BNs' statistics (kept true to the equalized
   layers by CLE), empirical where a layer has none.
2. AdaRound on the 4-layer digits CNN (examples/digits), W4A8 per-channel, 5000 iterations per layer:
   time (target ≤ 16 s on 2 CPU threads; AIMET 2.42: 32-40 s) and accuracy (AIMET: 0.976-0.978).
3. AdaRound time per 1000 iterations per layer on the ResNet-18-shaped net (bench/models/resnet.py).
4. AutoQuant on the MobileNet-style net at W4A8, allowed drop 1 point: stages and total time.

``python -m bench ptq [--quick] [--threads=N]``: --quick cuts iterations tenfold (a smoke run, not figures
to quote); --threads sets torch's CPU threads (default 2). On a shared, overloaded 2-core machine use
--threads=1: with 2 threads every op waits for a descheduled worker (a MobileNet forward measured 9×
slower than with 1 thread at load average 9).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import fx, nn

from bench.registry import register
from bench.table import print_table


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _sim(gm: fx.GraphModule, example: torch.Tensor, param_bw: int, per_channel: bool, scheme: str) -> Any:
    from core.quantsim import QuantSim

    return QuantSim(
        copy.deepcopy(gm),
        (example,),
        param_bw=param_bw,
        output_bw=8,
        per_channel=per_channel,
        param_scheme=scheme,
        act_scheme="min_max",
        prepared=True,
    )


def _digits_cnn_table(iterations: int) -> None:
    import numpy as np

    from core.ptq.adaround import AdaroundConfig, apply_adaround
    from core.quantsim import QuantSim
    from examples.digits import build

    paths = build()
    calib = torch.from_numpy(np.load(paths.calib_data)["input"])
    ev = np.load(paths.eval_data)
    ex, ey = torch.from_numpy(ev["input"]), torch.from_numpy(ev["labels"])
    program = torch.export.load(paths.model_pt2)
    rows: list[list[Any]] = []
    for scheme in ("min_max", "sqnr"):
        sim = QuantSim(program, (calib[:1],), param_bw=4, output_bw=8, per_channel=True, scheme=scheme)
        sim.compute_encodings(calib.split(64))
        nearest = _accuracy(sim.model, ex, ey)
        t0, c0 = time.perf_counter(), time.process_time()
        result = apply_adaround(sim, calib, AdaroundConfig(num_iterations=iterations))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        sim.compute_encodings(calib.split(64))
        methods = ",".join(sorted({r.method for r in result.layers}))
        rows.append(
            [
                scheme,
                _accuracy(sim.fp_model, ex, ey),
                nearest,
                _accuracy(sim.model, ex, ey),
                seconds,
                cpu,
                methods,
            ]
        )
    print_table(
        f"AdaRound, 4-layer digits CNN, W4A8 per-channel, {iterations} it/layer, {torch.get_num_threads()} threads "
        "(target ≤ 16 s; AIMET 2.42: 40 s min-max → 0.978, 32 s SQNR → 0.976; CPU s = process time, "
        "≈ wall time on an unloaded machine at 1 thread)",
        ["scheme", "FP32", "nearest", "AdaRound", "AdaRound wall s", "AdaRound CPU s", "objective"],
        rows,
    )


def _resnet_table(iterations: int) -> None:
    from bench.models.resnet import resnet18
    from core.graph import prepare_model
    from core.ptq.adaround import AdaroundConfig, apply_adaround
    from core.ptq.bn_fold import fold_all_batch_norms

    size, samples = 112, 32
    x = torch.randn(samples, 3, size, size, generator=torch.Generator().manual_seed(0))
    gm = prepare_model(resnet18(), (x[:1],))
    fold_all_batch_norms(gm)
    sim = _sim(gm, x[:1], 4, per_channel=True, scheme="min_max")
    result = apply_adaround(sim, x, AdaroundConfig(num_iterations=iterations, num_samples=samples))
    n = len(result.layers)
    collect = sum(r.collect_seconds for r in result.layers)
    grid = sum(r.grid_seconds for r in result.layers)  # once per layer: not scaled with iterations
    optimise = sum(r.seconds - r.collect_seconds - r.grid_seconds for r in result.layers)
    print_table(
        f"AdaRound time, ResNet-18 shape ({n} layers), {samples} samples at {size}x{size}, "
        f"{torch.get_num_threads()} threads, {iterations} it/layer measured",
        [
            "total seconds",
            "collection s/layer",
            "grid choice s/layer",
            "optimisation s per 1000 it per layer",
            "objectives",
        ],
        [
            [
                result.seconds,
                collect / n,
                grid / n,
                optimise / n * 1000 / iterations,
                ",".join(sorted({r.method for r in result.layers})),
            ]
        ],
    )


def _autoquant_table(iterations: int) -> None:
    from bench.models.mobilenet_digits import build_trained_mobilenet_digits
    from core.autoquant import autoquant
    from core.ptq.adaround import AdaroundConfig

    bundle = build_trained_mobilenet_digits(seed=0)
    ex, ey = bundle.eval
    result = autoquant(
        bundle.model,
        bundle.calib,
        lambda m: _accuracy(m, ex, ey),
        0.01,
        param_bw=4,
        output_bw=8,
        per_channel=False,
        adaround=AdaroundConfig(num_iterations=iterations),
    )
    rows = [[s.name, "" if s.score is None else s.score, s.status, s.seconds, ""] for s in result.stages]
    rows.append(["total", result.best_score, result.best_stage, result.seconds, result.message])
    print_table(
        "AutoQuant, MobileNet-style digits net, W4A8 per-tensor, allowed drop 0.01",
        ["stage", "accuracy", "status", "seconds", "outcome"],
        rows,
    )


def _load() -> str:
    import os

    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


@register("ptq", "CLE/AdaRound accuracy (MobileNet-style digits), AdaRound speed, AutoQuant W4A8")
def run(args: list[str]) -> None:
    threads = next((int(a.split("=", 1)[1]) for a in args if a.startswith("--threads=")), 2)
    torch.set_num_threads(threads)
    print(f"torch threads: {torch.get_num_threads()}; load average: {_load()}")
    quick = "--quick" in args
    iterations = 500 if quick else 5000
    from bench.ptq_mobilenet import mobilenet_recipes_table

    mobilenet_recipes_table(100 if quick else 1000)
    _digits_cnn_table(iterations)
    _autoquant_table(iterations)
    _resnet_table(5 if quick else 20)
