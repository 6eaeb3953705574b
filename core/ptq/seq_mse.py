"""Sequential MSE (AIMET's ``apply_seq_mse``): weight ranges chosen by the layer's output error.

For each Conv / ConvTranspose / Linear in forward order, with the layer's inputs ``x`` taken from the
sim (earlier layers already on their chosen ranges, activation quantizers off as in AdaRound), try the
candidate ranges ``k/n · [min, max]`` (k = 1..n, per output channel for per-channel weights, one for the
whole tensor otherwise) and keep, per encoding group, the one minimizing the output error

    Σ_samples,positions (layer(x; Q_k(W)) − layer(x; W))²      (summed per output channel)

The candidate k = n is the min-max range, so the chosen range never has a larger output error than
min-max on the calibration data. The weight quantizer is then frozen: later ``compute_encodings`` and
AdaRound (which rounds on the frozen grid) keep the range.

>>> sim = QuantSim(model, (x,), param_bw=4)                         # doctest: +SKIP
>>> apply_seq_mse(sim, calib_batches)                                # doctest: +SKIP
>>> sim.compute_encodings(calib_batches)                             # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from core.errors import CancelledError, ConfigError
from core.ptq.calibration_batches import Batch, materialize_batches, to_device
from core.ptq.layer_io import adaroundable_layers, capture
from core.quant.encoding import Encoding
from core.quant.primitives import fake_quantize

CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class SeqMseConfig:
    """num_candidates: ranges tried per group (k/n of the min-max range, k = 1..n; AIMET: 20).
    num_samples / batch_size: calibration samples used and per forward."""

    num_candidates: int = 20
    num_samples: int = 512
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.num_candidates < 1:
            raise ConfigError(f"num_candidates must be >= 1, got {self.num_candidates}")
        if self.num_samples < 1 or self.batch_size < 1:
            raise ConfigError("num_samples and batch_size must be >= 1")


@dataclass(frozen=True)
class LayerSeqMse:
    """Output error (sum of squares over the calibration data) at min-max and at the chosen ranges."""

    name: str
    min_max_error: float
    seq_mse_error: float
    fractions: list[float]


@dataclass
class SeqMseResult:
    layers: list[LayerSeqMse] = field(default_factory=list)
    seconds: float = 0.0


def _channel_dim(module: nn.Module) -> int:
    return -1 if isinstance(module, nn.Linear) else 1


def _per_channel_error(diff: torch.Tensor, dim: int) -> torch.Tensor:
    sq = diff.float().square().movedim(dim, 0)
    return sq.reshape(sq.shape[0], -1).sum(1)


def candidate_encodings(encoding: Encoding, weight: torch.Tensor, n: int) -> list[Encoding]:
    """The min-max encoding's range scaled by k/n, k = 1..n (the last is min-max itself)."""
    spec = encoding.spec
    if spec.granularity == "per_tensor":
        lo, hi = weight.min().reshape(1), weight.max().reshape(1)
    else:
        moved = weight.detach().movedim(spec.axis or 0, 0).reshape(weight.shape[spec.axis or 0], -1)
        lo, hi = moved.amin(1), moved.amax(1)
    return [
        Encoding.from_min_max(
            lo * (k / n), hi * (k / n), bitwidth=spec.bitwidth, symmetric=spec.symmetric, spec=spec
        )
        for k in range(1, n + 1)
    ]


def _stacked_errors(module: nn.Module, x: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor | None:
    """Per candidate and output channel, Σ (layer(x; W + Δ_k) − layer(x; W))² = Σ (conv(x; Δ_k))² by
    linearity, all candidates in one Conv/Linear call (the deltas stacked as extra output channels).
    None for layer types this does not cover."""
    k = deltas.shape[0]
    if isinstance(module, nn.Linear):
        out = nn.functional.linear(x, deltas.reshape(-1, deltas.shape[-1]))
        return out.reshape(-1, k, deltas.shape[1]).float().square().sum(0)
    if not isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) or module.padding_mode != "zeros":
        return None
    g, c_out = module.groups, deltas.shape[1]
    w = deltas.reshape(k, g, c_out // g, *deltas.shape[2:]).transpose(0, 1).reshape(-1, *deltas.shape[2:])
    conv = {1: nn.functional.conv1d, 2: nn.functional.conv2d, 3: nn.functional.conv3d}[deltas.dim() - 3]
    out = conv(x, w, None, module.stride, module.padding, module.dilation, g)  # type: ignore[operator]
    out = out.reshape(out.shape[0], g, k, c_out // g, -1).transpose(1, 2).reshape(out.shape[0], k, c_out, -1)
    return out.float().square().sum((0, 3))


def _search_layer(sim: Any, name: str, batches: list[Batch], config: SeqMseConfig) -> LayerSeqMse:
    qmod = sim.model.get_submodule(name)
    fmod = sim.fp_model.get_submodule(name)
    quantizer = qmod.param_quantizers["weight"]
    weight = qmod._parameters["weight"].detach()
    bias = qmod._parameters.get("bias")
    device = weight.device
    current = quantizer.encoding
    if current is None or current.spec.granularity == "per_block" or current.spec.dtype != "int":
        raise ConfigError(f"{name}: sequential MSE needs a per-tensor or per-channel integer weight encoding")
    candidates = candidate_encodings(current, weight, config.num_candidates)
    fakes = [fake_quantize(weight, enc.to(device)) for enc in candidates]
    deltas = torch.stack([w - weight for w in fakes])
    dim = _channel_dim(fmod)
    errors: torch.Tensor | None = None
    params: dict[str, torch.Tensor] = {"bias": bias.detach()} if bias is not None else {}
    for batch in batches:
        x = capture(sim.model, qmod, to_device(batch, device), output=False)
        with torch.no_grad():
            rows = _stacked_errors(fmod, x, deltas)
            if rows is None:
                ref = functional_call(fmod, {"weight": weight, **params}, (x,))
                rows = torch.stack(
                    [
                        _per_channel_error(functional_call(fmod, {"weight": w, **params}, (x,)) - ref, dim)
                        for w in fakes
                    ]
                )
        errors = rows if errors is None else errors + rows
    assert errors is not None
    groups = candidates[0].scale.numel()
    if groups == errors.shape[1]:
        best = errors.argmin(0)  # per output channel
        chosen = torch.gather(errors, 0, best.reshape(1, -1)).sum()
    else:  # per tensor (or groups that are not output channels): one range for the whole weight
        total = errors.sum(1)
        best = total.argmin().reshape(1).expand(groups)
        chosen = total.min()
    scale = torch.stack([c.scale for c in candidates])
    offset = torch.stack([c.offset for c in candidates])
    index = best.reshape(1, -1).cpu()
    encoding = Encoding(
        current.spec,
        torch.gather(scale, 0, index).reshape(-1).contiguous(),
        torch.gather(offset, 0, index).reshape(-1).contiguous(),
    )
    quantizer.set_encoding(encoding)
    quantizer.freeze()
    qmod.clear_param_cache()
    fractions = ((best + 1).float() / config.num_candidates).tolist()
    return LayerSeqMse(name, float(errors[-1].sum()), float(chosen), fractions)


def apply_seq_mse(
    sim: Any,
    data: Any,
    config: SeqMseConfig | None = None,
    *,
    layers: list[str] | None = None,
    cancel: CancelFn | None = None,
) -> SeqMseResult:
    """Choose and freeze the weight ranges of ``sim``'s Conv/ConvTranspose/Linear layers (or ``layers``)
    in place; activation quantizers are off while searching and restored after (their encodings are not
    computed here: call ``sim.compute_encodings`` next)."""
    config = config or SeqMseConfig()
    start = time.perf_counter()
    names = layers if layers is not None else adaroundable_layers(sim)
    # A frozen range (loaded encodings, an earlier search) is the user's choice: leave it.
    names = [n for n in names if not sim.model.get_submodule(n).param_quantizers["weight"].frozen]
    batches = materialize_batches(data, config.num_samples, config.batch_size)
    saved = [(q, q.enabled) for q in sim.activation_quantizers().values()]
    result = SeqMseResult()
    try:
        for q, _ in saved:
            q.enabled = False
        sim.compute_param_encodings()
        for name in names:
            if cancel is not None and cancel():
                raise CancelledError(f"sequential MSE cancelled at layer {name}")
            result.layers.append(_search_layer(sim, name, batches, config))
    finally:
        for q, enabled in saved:
            q.enabled = enabled
        for m in sim.quantized_modules().values():
            m.clear_param_cache()
    result.seconds = time.perf_counter() - start
    return result
