"""MiniLM-L6 W8A8: mean sentence-embedding cosine vs FP32 over 64 sentences, per range scheme.

Every quantizer of the default config is enabled at 8 bits. Calibration uses 64 other sentences.
Target (issue 2): ≥ 0.90 with the best scheme (AIMET 2.42: 0.872 min-max, 0.857 SQNR).
Each scheme is measured with AIMET's calibration (float activations upstream) and, with
``--refine=N`` (default 2, 0 = off), also after N quantized-input passes (core/quantsim/refine.py).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from bench.registry import register
from bench.table import print_table


@register("minilm", "MiniLM-L6 W8A8 embedding cosine vs FP32 per scheme")
def run(args: list[str]) -> None:
    from core.quantsim import QuantSim
    from examples.minilm import load_minilm, sentences, tokenize

    torch.set_num_threads(2)
    batch = 8
    model, _ = load_minilm()
    calib_ids, calib_mask = tokenize(sentences(64, offset=0))
    eval_ids, eval_mask = tokenize(sentences(64, offset=64))
    calib = [(calib_ids[i : i + batch], calib_mask[i : i + batch]) for i in range(0, 64, batch)]
    evals = [(eval_ids[i : i + batch], eval_mask[i : i + batch]) for i in range(0, 64, batch)]
    with torch.no_grad():
        reference = torch.cat([model(*b) for b in evals])
    rows: list[list[Any]] = []
    schemes = [a.split("=", 1)[1] for a in args if a.startswith("--schemes=")]
    refine = [int(a.split("=", 1)[1]) for a in args if a.startswith("--refine=")]
    passes = refine[0] if refine else 2
    for scheme in schemes[0].split(",") if schemes else ["min_max", "sqnr", "mse", "percentile"]:
        for n in sorted({0, passes}):
            t = time.perf_counter()
            sim = QuantSim(model, calib[0], scheme=scheme)
            sim.compute_encodings(calib, quantized_input_passes=n)
            with torch.no_grad():
                out = torch.cat([sim.model(*b) for b in evals])
            cos = float(torch.nn.functional.cosine_similarity(reference, out, dim=1).mean())
            enabled = sum(q.enabled for q in sim.quantizers().values())
            rows.append([scheme, n, cos, enabled, time.perf_counter() - t])
    best = max(rows, key=lambda r: r[2])
    if "--analyze" in args:
        _analyze(model, calib, evals, str(best[0]), int(best[1]))
    print_table(
        "MiniLM-L6 W8A8, default config, mean embedding cosine vs FP32 (64 held-out sentences)",
        ["scheme", "quantized-input passes", "cosine", "quantizers", "seconds"],
        rows,
    )
    print(
        f"best: {best[0]} with {best[1]} quantized-input passes {best[2]:.4f} "
        "(target ≥ 0.90; AIMET 2.42: 0.872 min-max, 0.857 SQNR)"
    )


def _analyze(model: torch.nn.Module, calib: list, evals: list, scheme: str, passes: int) -> None:  # type: ignore[type-arg]
    """Which quantizers cost the most cosine similarity (issue 5): QuantAnalyzer, per quantizer."""
    from core.analysis import QuantAnalyzer
    from core.quantsim import QuantSim

    sim = QuantSim(model, calib[0], scheme=scheme)
    sim.compute_encodings(calib, quantized_input_passes=passes)
    t = time.perf_counter()
    result = QuantAnalyzer(sim, calib, eval_data=evals, num_batches=2, per_quantizer=True).analyze(
        "out/bench/minilm-analysis"
    )
    costly = result.costly_quantizers(10)
    print_table(
        f"MiniLM-L6 W8A8 ({scheme}): quantizers costing the most cosine (QuantAnalyzer, {time.perf_counter() - t:.0f} s)",
        ["quantizer", "cosine gained when disabled"],
        [[k, v] for k, v in costly],
    )
    print(f"report: {result.files.get('report', 'out/bench/minilm-analysis/report.html')}")
