"""When the deployed QDQ model and the simulation disagree, say so and name the likely cause.

The simulation predicts what the integer runtime computes only as far as its config's ``target``
models the runtime's arithmetic (core/quantsim/target.py). Below ``AGREEMENT_FLOOR`` top-1
agreement or ``SQNR_FLOOR_DB`` logits SQNR the result carries a warning, and verdicts (AutoQuant's
target, the job's drop) go by the deployed model's score, never by the sim's alone.

>>> runtime_warning({"top1_agreement": 0.97, "sqnr_db": 12.0}, weight_bits=8, max_weight_bits=None,
...                 bias_int32=False, vnni=False)                                  # doctest: +ELLIPSIS
'ONNX Runtime disagrees with the simulation (top-1 agreement 0.970, SQNR 12.0 dB): likely cause: ...'
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

AGREEMENT_FLOOR = 0.99
SQNR_FLOOR_DB = 30.0
# ORT's u8×s8 kernels without VNNI sum products in int16 pairs: 2·255·|q_w| must stay below 2^15.
SATURATION_FREE_WEIGHT_BITS = 7


@lru_cache(maxsize=1)
def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (avx512_vnni / avx_vnni): u8×s8 dot products in int32, no saturation."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return "avx512_vnni" in flags.split() or "avx_vnni" in flags.split()


def disagrees(agreement: Mapping[str, float]) -> bool:
    if not agreement:
        return False
    return (
        agreement.get("top1_agreement", 1.0) < AGREEMENT_FLOOR
        or agreement.get("sqnr_db", 1e9) < SQNR_FLOOR_DB
    )


def runtime_warning(
    agreement: Mapping[str, float],
    *,
    weight_bits: int,
    max_weight_bits: int | None,
    bias_int32: bool,
    vnni: bool | None = None,
) -> str | None:
    """A warning naming the likely cause when ORT and the sim disagree; None when they agree."""
    if not disagrees(agreement):
        return None
    vnni = cpu_has_vnni() if vnni is None else vnni
    head = (
        f"ONNX Runtime disagrees with the simulation (top-1 agreement {agreement.get('top1_agreement', 1.0):.3f}, "
        f"SQNR {agreement.get('sqnr_db', float('inf')):.1f} dB): likely cause: "
    )
    capped = max_weight_bits is not None and max_weight_bits <= SATURATION_FREE_WEIGHT_BITS
    if weight_bits > SATURATION_FREE_WEIGHT_BITS and not capped and not vnni:
        return head + (
            f"{weight_bits}-bit weights overflow ONNX Runtime's 16-bit saturating u8 x s8 pair sums on this CPU "
            "(x86 without VNNI) once DQ->Conv->Q is fused into QLinearConv; quantize with config "
            "'onnxruntime_cpu' (7-bit weights, ORT's reduce_range) or deploy on a CPU with VNNI"
        )
    if not bias_int32:
        return head + (
            "the runtime rounds each bias to int32 at input scale x weight scale while the simulation kept it "
            "float (coarse grids at low weight bitwidths); quantize with config 'onnxruntime_cpu', which models it"
        )
    return head + (
        "an operator the runtime fuses or requantizes differently from the simulation (compare with ORT's "
        "graph optimizations off: session option session.disable_quant_qdq=1)"
    )


def sim_warning(sim: Any, agreement: Mapping[str, float]) -> str | None:
    """:func:`runtime_warning` for a QuantSim: its widest weight grid and its config's target arithmetic."""
    bits = [
        q.spec.bitwidth for key, q in sim.param_quantizers().items() if key.endswith(".weight") and q.enabled
    ]
    target = sim.config.target
    return runtime_warning(
        agreement,
        weight_bits=max(bits, default=0),
        max_weight_bits=target.max_weight_bits,
        bias_int32=target.bias_int32,
    )


def deployed_scorer(data: Any, *, batch_size: int = 256, max_samples: int = 2000) -> Callable[[Any], float]:
    """``score(sim) -> float``: the sim's exported QDQ model in ONNX Runtime (default optimizations) on ``data``.

    ``data`` is a core.io.CalibrationData; with labels the score is top-1 accuracy of the first output,
    without it is the mean cosine similarity to the FP32 model's outputs (AutoQuant's label-free metric).
    This is AutoQuant's ``deployed_score`` hook: verdicts go by the model that ships.
    """
    from core.export.runtime import OnnxRunner

    labels = getattr(data, "labels", None)

    def score(sim: Any) -> float:
        with tempfile.TemporaryDirectory(prefix="lowbit-deployed-") as tmp:
            result = sim.export(tmp, prefix="model")
            runner = OnnxRunner(Path(getattr(result, "qdq_onnx", None) or Path(tmp) / "model_qdq.onnx"))
            seen, hits, cosines = 0, 0, []
            for inputs in data.batches(batch_size):
                inputs = tuple(t[: max_samples - seen] for t in inputs)
                out = np.asarray(runner.run(inputs)[0], dtype=np.float64).reshape(inputs[0].shape[0], -1)
                if labels is not None:
                    y = np.asarray(labels[seen : seen + len(out)]).reshape(-1)
                    hits += int((out.argmax(1) == y).sum())
                else:
                    with torch.no_grad():
                        ref = sim.fp_model(*inputs)
                    ref = ref[0] if isinstance(ref, tuple | list) else ref
                    a = ref.detach().double().reshape(len(out), -1).numpy()
                    num = (a * out).sum(1)
                    den = np.linalg.norm(a, axis=1) * np.linalg.norm(out, axis=1) + 1e-12
                    cosines.extend((num / den).tolist())
                seen += len(out)
                if seen >= max_samples:
                    break
        if labels is not None:
            return hits / max(seen, 1)
        return float(np.mean(cosines)) if cosines else 0.0

    return score
