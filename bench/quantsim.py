"""QuantSim speed on a ResNet-18-shaped network (CPU, 2 threads, batch 8, 224x224).

Targets (issue 2): forward W8A8 / FP32 ≤ 1.15; compute_encodings over 8 batches / 8 FP32
forwards ≤ 1.3 (min-max) and ≤ 2.0 (SQNR). AIMET 2.42 on this machine class: 1.30; ~1.2 and ~6.4.
"""

from __future__ import annotations

import torch

from bench.models.resnet import resnet18
from bench.registry import register
from bench.table import print_table
from bench.timing import interleaved_medians


@register("quantsim", "QuantSim forward and compute_encodings vs FP32 on ResNet-18 shape")
def run(args: list[str]) -> None:
    from core.quantsim import QuantSim

    torch.set_num_threads(2)
    torch.manual_seed(0)
    batches = [torch.randn(8, 3, 224, 224) for _ in range(8)]
    model = resnet18()
    sims = {}
    for scheme in ("min_max", "sqnr"):
        sim = QuantSim(model, (batches[0][:1],), scheme=scheme)
        sim.compute_encodings(batches[:2])
        sims[scheme] = sim
    x = batches[0]
    with torch.inference_mode():
        fwd = interleaved_medians(
            {
                "fp32": lambda: model(x),
                "fp32_prepared": lambda: sims["min_max"].fp_model(x),
                "min_max": lambda: sims["min_max"].model(x),
                "sqnr": lambda: sims["sqnr"].model(x),
            },
            repeats=7,
        )

    def fp_pass() -> None:
        with torch.inference_mode():
            for b in batches:
                model(b)

    calib = interleaved_medians(
        {
            "fp32": fp_pass,
            "min_max": lambda: sims["min_max"].compute_encodings(batches),
            "sqnr": lambda: sims["sqnr"].compute_encodings(batches),
        },
        repeats=3,
        warmup=0,
    )
    rows = [
        ["forward W8A8 min-max / FP32", fwd["min_max"] / fwd["fp32"], "≤ 1.15", "1.30"],
        ["forward W8A8 min-max / prepared FP32 graph", fwd["min_max"] / fwd["fp32_prepared"], "≤ 1.15", "-"],
        ["forward W8A8 SQNR / FP32", fwd["sqnr"] / fwd["fp32"], "≤ 1.15", "1.46"],
        ["compute_encodings min-max / 8 FP32 fwd", calib["min_max"] / calib["fp32"], "≤ 1.3", "~1.2"],
        ["compute_encodings SQNR / 8 FP32 fwd", calib["sqnr"] / calib["fp32"], "≤ 2.0", "~6.4"],
    ]
    print_table(
        "QuantSim speed, ResNet-18 shape, batch 8, 2 threads (ratios)",
        ["measure", "lowbit", "target", "AIMET 2.42"],
        rows,
    )
    print(
        f"(FP32 forward {fwd['fp32'] * 1e3:.0f} ms, prepared FP32 graph {fwd['fp32_prepared'] * 1e3:.0f} ms; "
        f"8 FP32 forwards {calib['fp32']:.2f} s)"
    )
