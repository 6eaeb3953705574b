"""Per-layer error against FP32.

* ``layer_output_error`` — each quantized layer's output in the fully quantized simulation against
  the same layer's output in ``sim.fp_model`` on the same inputs: MSE and SQNR (dB). Errors
  accumulate along the network, so this shows where the quantized model drifts away.
* ``quantizer_sqnr`` — the error a single quantizer adds to its own tensor (FP32 weights, or a
  sample of FP32 activations), SQNR in dB: tells whether a layer suffers from its weight grid or
  from its activation grid.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from core.analysis.activations import TensorStats
from core.analysis.metrics import MAX_SQNR_DB, sqnr_db
from core.analysis.sensitivity import active_keys, enabled_only


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple | list):
        for item in out:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _capture(model: torch.nn.Module, names: list[str], into: dict[str, torch.Tensor]) -> list[Any]:
    handles = []
    for name in names:

        def hook(_m: Any, _a: Any, out: Any, name: str = name) -> None:
            t = _first_tensor(out)
            if t is not None and t.is_floating_point():
                into[name] = t.detach().float()

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    return handles


def layer_output_error(sim: Any, batches: Iterable[tuple[torch.Tensor, ...]]) -> dict[str, dict[str, float]]:
    """layer → {"mse", "sqnr_db"} of its quantized output vs FP32, over ``batches``."""
    names = list(sim.quantized_modules())
    sums = {n: [0.0, 0.0, 0] for n in names}  # signal², noise², elements
    fp_out: dict[str, torch.Tensor] = {}
    q_out: dict[str, torch.Tensor] = {}
    handles = _capture(sim.fp_model, names, fp_out) + _capture(sim.model, names, q_out)
    try:
        with enabled_only(sim, active_keys(sim)), torch.no_grad():
            sim.fp_model.eval()
            sim.model.eval()
            for batch in batches:
                fp_out.clear()
                q_out.clear()
                sim.fp_model(*batch)
                sim.model(*batch)
                for n in names:
                    if n in fp_out and n in q_out and fp_out[n].shape == q_out[n].shape:
                        ref, test = fp_out[n].double(), q_out[n].double()
                        sums[n][0] += float(ref.pow(2).sum())
                        sums[n][1] += float((ref - test).pow(2).sum())
                        sums[n][2] += ref.numel()
    finally:
        for h in handles:
            h.remove()
    out: dict[str, dict[str, float]] = {}
    for n, (signal, noise, count) in sums.items():
        if count == 0:
            continue
        sqnr = (
            MAX_SQNR_DB
            if noise == 0
            else (-MAX_SQNR_DB if signal == 0 else 10 * torch.log10(torch.tensor(signal / noise)).item())
        )
        out[n] = {"mse": noise / count, "sqnr_db": min(MAX_SQNR_DB, sqnr)}
    return out


def quantizer_sqnr(sim: Any, stats: dict[str, TensorStats]) -> dict[str, float]:
    """quantizer key → SQNR (dB) of its fake-quantized FP32 tensor (weights) or activation sample."""
    out: dict[str, float] = {}
    with torch.no_grad():
        for key, q in sim.param_quantizers().items():
            if not q.enabled or q.encoding is None:
                continue
            module_name, _, pname = key.rpartition(".param.")
            w = getattr(sim.model.get_submodule(module_name), pname, None)
            if isinstance(w, torch.Tensor) and w.numel():
                out[key] = sqnr_db(w.detach().float(), q(w.detach().float()))
        quantizers = sim.quantizers()
        for key, s in stats.items():
            q = quantizers[key]
            values = s.values()
            if values.numel() and q.encoding is not None and q.spec.granularity == "per_tensor":
                out[key] = sqnr_db(values, q(values))
    return out
