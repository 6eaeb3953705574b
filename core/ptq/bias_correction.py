"""Bias correction (DFQ): remove the shift that weight quantization adds to each output channel's mean.

Quantized weights Ŵ = W + ε change the expected output by ε·E[x]. Two ways to measure it:

* **empirical**: run calibration data; for each Conv/ConvTranspose/Linear (forward order, so later
  layers see corrected earlier ones) bias −= E[layer(x̃; Ŵ) − layer_fp(x; W)] per channel, x̃ being the
  input in the quantized sim and x in the FP32 model.
* **analytical**: where the layer's input comes straight from a layer that had a BN folded into it
  (optionally through ReLU/ReLU6), that BN says the input is ≈ N(β, γ²) per channel, so E[x] is known in
  closed form (clipped-normal mean) and bias += (W − Ŵ)·E[x] needs no data. Other layers fall back to
  empirical.

Deprecated in favour of AdaRound (which targets the same error and more), but kept for DFQ recipes.
Call ``sim.compute_encodings`` afterwards: output ranges move with the biases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import fx, nn
from torch.func import functional_call

from core.errors import ConfigError
from core.ptq.bn_fold import BnStats
from core.ptq.calibration_batches import materialize_batches, to_device
from core.ptq.channel_clip import ChannelClip
from core.ptq.graph_walk import CONV_TRANSPOSE_TYPES, ensure_bias, module_of
from core.ptq.layer_io import adaroundable_layers, capture
from core.ptq.weight_channels import in_channel_sum


@dataclass
class BiasCorrectionResult:
    empirical: list[str] = field(default_factory=list)
    analytical: list[str] = field(default_factory=list)


def _normal_relu_mean(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[max(X, 0)] for X ~ N(mu, sigma²)."""
    sigma = sigma.clamp_min(1e-12)
    z = mu / sigma
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return mu * cdf + sigma * pdf


def _expected_input(gm: fx.GraphModule, node: fx.Node, bn_stats: dict[str, BnStats]) -> torch.Tensor | None:
    """E[input] per channel of ``node``'s layer, from the BN folded into the producing layer, if any."""
    src = node.args[0] if node.args else None
    if not isinstance(src, fx.Node):
        return None
    act = module_of(gm, src)
    clip: float | torch.Tensor | None = None
    relu = False
    if isinstance(act, nn.ReLU):
        relu, src = True, src.args[0]  # type: ignore[assignment]
    elif isinstance(act, ChannelClip) and not bool(torch.any(act.lower != 0)):
        relu, clip, src = True, act.upper, src.args[0]  # type: ignore[assignment]
    elif isinstance(act, nn.ReLU6) or (
        isinstance(act, nn.Hardtanh) and (act.min_val, act.max_val) == (0.0, 6.0)
    ):
        relu, clip, src = True, 6.0, src.args[0]  # type: ignore[assignment]
    if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
        return None
    stats = bn_stats.get(str(src.target))
    if stats is None:
        return None
    if not relu:
        return stats.beta
    mean = _normal_relu_mean(stats.beta, stats.gamma.abs())
    if clip is not None:
        mean = mean - _normal_relu_mean(stats.beta - clip, stats.gamma.abs())
    return mean


def correct_bias(
    sim: Any,
    data: Any = None,
    *,
    method: Literal["empirical", "analytical"] = "empirical",
    bn_stats: dict[str, BnStats] | None = None,
    num_samples: int = 512,
    batch_size: int = 32,
    layers: list[str] | None = None,
) -> BiasCorrectionResult:
    """Correct the biases of ``sim.model``'s Conv/ConvTranspose/Linear layers in place.

    ``bn_stats``: ``BnFoldResult.bn_stats`` from folding the model the sim was built on (analytical).
    Weight encodings must exist (``sim.compute_param_encodings()`` or ``compute_encodings``)."""
    if method not in ("empirical", "analytical"):
        raise ConfigError(f"unknown bias correction method {method!r}; choose empirical or analytical")
    names = layers if layers is not None else adaroundable_layers(sim)
    result = BiasCorrectionResult()
    nodes = {str(n.target): n for n in sim.model.graph.nodes if n.op == "call_module"}
    pending: list[str] = []
    for name in names:
        qmod = sim.model.get_submodule(name)
        expected = _expected_input(sim.model, nodes[name], bn_stats or {}) if method == "analytical" else None
        if expected is None or isinstance(qmod, CONV_TRANSPOSE_TYPES):
            pending.append(name)
            continue
        quantizer = qmod.param_quantizers["weight"]
        weight = qmod._parameters["weight"].detach()
        error = weight - quantizer(weight).detach()
        param = qmod._parameters["weight"]
        original = param.data
        with torch.no_grad():
            param.data = error  # in_channel_sum reads the layer's weight layout (groups, transposition)
            try:
                delta = in_channel_sum(qmod, expected.to(weight.device))
            finally:
                param.data = original
            ensure_bias(qmod).add_(delta.to(weight.dtype))
        qmod.clear_param_cache()
        result.analytical.append(name)
    if pending:
        if data is None:
            raise ConfigError(f"empirical bias correction needs calibration data (layers {pending})")
        batches = materialize_batches(data, num_samples, batch_size)
        for name in pending:
            _correct_empirically(sim, name, batches)
            result.empirical.append(name)
    return result


def _correct_empirically(sim: Any, name: str, batches: list[tuple[Any, ...]]) -> None:
    qmod = sim.model.get_submodule(name)
    fmod = sim.fp_model.get_submodule(name)
    device = next(iter(qmod.parameters())).device
    quantizer = qmod.param_quantizers["weight"]
    with torch.no_grad():
        q_weight = quantizer(qmod._parameters["weight"].detach())
    bias = qmod._parameters.get("bias")
    total: torch.Tensor | None = None
    count = 0
    for batch in batches:
        b = to_device(batch, device)
        x_q = capture(sim.model, qmod, b, output=False)
        y_fp = capture(sim.fp_model, fmod, b, output=True)
        params = {"weight": q_weight}
        if bias is not None:
            params["bias"] = bias.detach()
        with torch.no_grad():
            y_q = functional_call(fmod, params, (x_q,))
        diff = y_q - y_fp
        dims = [d for d in range(diff.dim()) if d != (diff.dim() - 1 if isinstance(fmod, nn.Linear) else 1)]
        part = diff.sum(dims)
        total = part if total is None else total + part
        count += diff.numel() // diff.shape[-1 if isinstance(fmod, nn.Linear) else 1]
    assert total is not None
    with torch.no_grad():
        ensure_bias(qmod).sub_((total / count).to(qmod._parameters["weight"].dtype))
    qmod.clear_param_cache()
