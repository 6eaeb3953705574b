"""QAT at W4A4 per-tensor on the digits task: PTQ vs QAT regular vs QAT range learning, and step time.

Model: the MobileNet-style digits net (bench/models/mobilenet_digits.py) when present, else the
digits CNN of examples/digits. PTQ baseline: AutoQuant's best result when core.autoquant exists,
else the best range-setting scheme (min_max, sqnr, mse, percentile), i.e. AutoQuant's first stage.
Both QAT modes start from the baseline's scheme and train with labels for a short schedule.
Step time: one training step (forward, backward, Adam step; for regular QAT including the weight
grid recomputation) on a batch of 64, QAT over FP32, interleaved medians. Target ≤ 1.5 on CPU.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import nn

from bench.registry import register
from bench.table import print_table
from bench.timing import interleaved_medians

SCHEMES = ("min_max", "sqnr", "mse", "percentile")


def _model() -> tuple[nn.Module, str]:
    try:
        from bench.models.mobilenet_digits import build_trained_mobilenet_digits
    except ImportError:
        from examples.digits.train import load_split, train

        return train(load_split()), "digits CNN (examples/digits; mobilenet_digits not available)"
    return build_trained_mobilenet_digits(seed=0), "MobileNet-style digits net"


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _sim(model: nn.Module, x: torch.Tensor, scheme: str) -> Any:
    from core.quantsim import QuantSim

    sim = QuantSim(copy.deepcopy(model), (x[:1],), param_bw=4, output_bw=4, per_channel=False, scheme=scheme)
    sim.compute_encodings(x[:512].split(64))
    return sim


def _ptq(
    model: nn.Module, train_x: torch.Tensor, eval_x: torch.Tensor, eval_y: torch.Tensor
) -> tuple[str, float]:
    results = {}
    for scheme in SCHEMES:
        results[scheme] = _accuracy(_sim(model, train_x, scheme).model, eval_x, eval_y)
    best = max(results, key=lambda s: results[s])
    return best, results[best]


def _step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


@register("qat", "W4A4 digits: PTQ vs QAT regular vs range learning; QAT/FP32 training step time")
def run(args: list[str]) -> None:
    from core.qat import finish_qat, prepare_qat, qat
    from examples.digits.train import load_split

    torch.set_num_threads(2)
    torch.manual_seed(0)
    split = load_split()
    train_x, train_y = torch.from_numpy(split.train_x), torch.from_numpy(split.train_y)
    eval_x, eval_y = torch.from_numpy(split.eval_x), torch.from_numpy(split.eval_y)
    model, model_name = _model()
    fp32 = _accuracy(model, eval_x, eval_y)
    t0 = time.perf_counter()
    scheme, ptq_acc = _ptq(model, train_x, eval_x, eval_y)
    ptq_s = time.perf_counter() - t0

    epochs = 4
    rows = [["FP32", fp32, "–", "–"], [f"PTQ best scheme ({scheme})", ptq_acc, "–", f"{ptq_s:.1f}"]]
    for mode, lr in (("regular", 1e-3), ("range_learning", 1e-3)):
        sim = _sim(model, train_x, scheme)
        result = qat(sim, train_x, labels=train_y, epochs=epochs, lr=lr, batch_size=64, mode=mode)
        rows.append(
            [
                f"QAT {mode} ({epochs} epochs, lr {lr:g})",
                _accuracy(sim.model, eval_x, eval_y),
                f"{result.seconds_per_step * 1000:.1f} ms",
                f"{result.seconds:.1f}",
            ]
        )
    print_table(
        f"QAT at W4A4 per-tensor — {model_name}", ["configuration", "eval accuracy", "step", "seconds"], rows
    )

    x, y = train_x[:64], train_y[:64]
    fp_model = copy.deepcopy(model)
    sim_regular, sim_range = _sim(model, train_x, scheme), _sim(model, train_x, scheme)
    prepare_qat(sim_regular, "regular")
    prepare_qat(sim_range, "range_learning")
    times = interleaved_medians(
        {
            "fp32": _step_fn(fp_model, x, y),
            "regular": _step_fn(sim_regular.model, x, y),
            "range_learning": _step_fn(sim_range.model, x, y),
        },
        repeats=15,
        warmup=3,
    )
    finish_qat(sim_regular)
    finish_qat(sim_range)
    print_table(
        "Training step time, batch 64, 2 threads (median of 15, interleaved)",
        ["contender", "ms / step", "ratio to FP32", "target"],
        [
            ["FP32", times["fp32"] * 1000, 1.0, "–"],
            ["QAT regular", times["regular"] * 1000, times["regular"] / times["fp32"], "≤ 1.5"],
            [
                "QAT range learning",
                times["range_learning"] * 1000,
                times["range_learning"] / times["fp32"],
                "≤ 1.5",
            ],
        ],
    )
