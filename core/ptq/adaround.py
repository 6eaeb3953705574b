"""AdaRound on a QuantSim: learned weight rounding, layer by layer, frozen into the sim's weight encodings.

Flow (as AIMET, with a faster objective and two differences): weight encodings are computed once from
the FP32 weights; Conv / ConvTranspose / Linear layers are rounded in forward order, each from its inputs
in the partially rounded sim (earlier layers already AdaRounded) and its targets in the FP32 model
(``sim.fp_model``). The rounded weight is written into ``sim.model``'s module (it lies exactly on the
encoding's grid, so fake-quantizing it is the identity) and the weight quantizer is frozen so later
``compute_encodings`` calls keep it. Unlike AIMET's weights-only sim, the inputs are *quantized*: the
sim's activation quantizers stay on (calibrated with float weights if they have no encodings), so each
layer's rounding also makes up for the activation quantization upstream; and each layer's grid is the
range with the lowest output error among k/20 of min-max and the sim's own (core/ptq/adaround_grid.py),
unless the range is frozen. Both are what takes W4A8 per tensor on a MobileNet-style net with channel
ranges spread 10–30× from 0.93 (AIMET's recipe) to FP32 (bench/ptq_mobilenet.py).

The objective is exact over all calibration samples through Gram matrices wherever the layer allows
(see core/ptq/adaround_objectives.py); other layers use minibatches of cached activations that spill to
disk past ``cache_budget_bytes``.

>>> sim = QuantSim(model, (x,), param_bw=4)                                   # doctest: +SKIP
>>> result = apply_adaround(sim, calib_batches, AdaroundConfig(num_iterations=2000))  # doctest: +SKIP
>>> sim.compute_encodings(calib_batches)   # activations; AdaRounded weights stay   # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from core.errors import CancelledError, ConfigError
from core.ptq.activation_cache import ActivationCache
from core.ptq.adaround_grid import search_grid
from core.ptq.adaround_objectives import (
    GramAccumulator,
    SampledObjective,
    gram_group_size,
    gram_supported,
)
from core.ptq.adaround_rounding import SoftRounding, cpu_threads_for, optimize_rounding
from core.ptq.calibration_batches import Batch, materialize_batches, to_device
from core.ptq.layer_io import adaroundable_layers, calibrate_activations, capture
from core.quant.primitives import broadcast_encoding

ProgressFn = Callable[[float], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class AdaroundConfig:
    """AdaRound settings and their defaults.

    num_iterations  5000 Adam steps per layer (AIMET: 10000; the exact full-data objective converges sooner).
    reg_param       0.01 weight of the rounding regulariser.
    beta_range      (20, 2) start and end of the annealed regulariser exponent β.
    warm_start      0.2 fraction of iterations with the regulariser off.
    lr              1e-3 Adam learning rate on α.
    num_samples     2000 calibration samples used (AIMET: ≤ 2000; 500–1000 recommended minimum).
    batch_size      32 samples per step for minibatch objectives, and per forward when collecting.
    method          "auto": Gram objective where supported and cheaper than minibatches, else "sampled";
                    "gram" / "sampled" force one (gram falls back to sampled where unsupported).
    cache_budget_bytes  1 GiB of cached activations per layer in memory; the rest spills to disk.
    spill_dir       folder for spill files (default: the system temp dir).
    device          None: the sim's device, else e.g. "cuda".
    seed            0, for minibatch sampling.
    range_candidates  20: before rounding a layer whose weight range is not frozen (by SeqMSE, loaded
                    encodings), try k/20 of its min-max range and the sim's own range, and round on the
                    one with the lowest reconstruction error (core/ptq/adaround_grid.py; Gram layers
                    only); 0 keeps the sim's range as AIMET does.
    quantized_inputs  True: each layer's inputs come from the sim with its activation quantizers on
                    (calibrated with float weights first when they have no encodings), so the rounding
                    also makes up for upstream activation quantization; False: weights-only sim (AIMET).
    """

    num_iterations: int = 5000
    reg_param: float = 0.01
    beta_range: tuple[float, float] = (20.0, 2.0)
    warm_start: float = 0.2
    lr: float = 1e-3
    num_samples: int = 2000
    batch_size: int = 32
    method: Literal["auto", "gram", "sampled"] = "auto"
    cache_budget_bytes: int = 1 << 30
    spill_dir: str | None = None
    device: str | None = None
    seed: int = 0
    range_candidates: int = 20
    quantized_inputs: bool = True

    def __post_init__(self) -> None:
        if self.num_iterations < 1:
            raise ConfigError(f"num_iterations must be >= 1, got {self.num_iterations}")
        if self.method not in ("auto", "gram", "sampled"):
            raise ConfigError(f"unknown AdaRound method {self.method!r}; choose auto, gram or sampled")
        if not 0.0 <= self.warm_start < 1.0:
            raise ConfigError(f"warm_start must be in [0, 1), got {self.warm_start}")
        if self.num_samples < 1 or self.batch_size < 1:
            raise ConfigError("num_samples and batch_size must be >= 1")
        if self.range_candidates < 0:
            raise ConfigError(f"range_candidates must be >= 0, got {self.range_candidates}")


@dataclass(frozen=True)
class LayerRounding:
    """One layer's outcome: reconstruction errors (mean over positions of the squared error summed
    over output channels) with nearest rounding and with AdaRound."""

    name: str
    method: str
    nearest_error: float
    adaround_error: float
    seconds: float
    spilled: bool = False
    collect_seconds: float = 0.0  # of ``seconds``: running the models to gather statistics
    range_ratio: float = 1.0  # scale of the grid rounded on / the sim's (1.0: range kept)
    grid_seconds: float = 0.0  # of ``seconds``: choosing the grid (≈ range_candidates + 1 iterations)


@dataclass
class AdaroundResult:
    layers: list[LayerRounding] = field(default_factory=list)
    seconds: float = 0.0


def _choose_method(config: AdaroundConfig, module: nn.Module, positions_per_sample: int) -> str:
    if config.method == "sampled" or not gram_supported(module):
        return "sampled"
    if config.method == "gram":
        return "gram"
    k = gram_group_size(module)
    # Gram step ≈ C_out·K² flops; a minibatch step ≈ 6·batch·positions·C_out·K (forward + weight grad)
    # plus sampling and autograd overhead (≈ 4× on small layers, measured), and it sees one batch, not all.
    return "gram" if k <= 24 * config.batch_size * max(positions_per_sample, 1) else "sampled"


def _positions(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Linear):
        return int(out[0].numel() // out.shape[-1])
    return int(out[0, 0].numel())


def _round_layer(
    sim: Any,
    name: str,
    batches: list[Batch],
    config: AdaroundConfig,
    device: torch.device,
    check: Callable[[int], None],
) -> LayerRounding:
    start = time.perf_counter()
    qmod = sim.model.get_submodule(name)
    fmod = sim.fp_model.get_submodule(name)
    quantizer = qmod.param_quantizers["weight"]
    encoding = quantizer.encoding
    if encoding is None:
        raise ConfigError(f"weight quantizer of {name} has no encoding; compute param encodings first")
    weight = qmod._parameters["weight"].detach().to(device)
    probe = capture(sim.fp_model, fmod, to_device(batches[0], device), output=True)
    positions = _positions(fmod, probe)
    method = _choose_method(config, fmod, positions)
    spilled = False
    if method == "gram":
        acc = GramAccumulator(fmod)
        for batch in batches:
            b = to_device(batch, device)
            acc.add(capture(sim.model, qmod, b, output=False), capture(sim.fp_model, fmod, b, output=False))
        objective = acc.objective(fmod.weight.detach().to(device), device)
        flops = 2 * weight.numel() * gram_group_size(fmod)
        grad_fn: Callable[[torch.Tensor], torch.Tensor] = objective.gradient

        def error(w: torch.Tensor) -> float:
            return float(objective.loss(w))
    else:
        inputs = ActivationCache(config.cache_budget_bytes // 2, config.spill_dir)
        targets = ActivationCache(config.cache_budget_bytes // 2, config.spill_dir)
        for batch in batches:
            b = to_device(batch, device)
            inputs.append(capture(sim.model, qmod, b, output=False))
            targets.append(capture(sim.fp_model, fmod, b, output=True))
        inputs.finish()
        targets.finish()
        spilled = inputs.spilled or targets.spilled
        gen = torch.Generator().manual_seed(config.seed)
        sampled = SampledObjective(fmod, inputs, targets, config.batch_size, device, gen)
        flops = 6 * config.batch_size * positions * weight.numel()

        def grad_fn(w: torch.Tensor) -> torch.Tensor:
            leaf = w.detach().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(sampled.loss(leaf), leaf)
            return g

        def error(w: torch.Tensor) -> float:
            return sampled.full_error(w)

    collect_seconds = time.perf_counter() - start
    initial = encoding
    if method == "gram" and not quantizer.frozen:
        encoding = search_grid(objective, weight, encoding, config.range_candidates)
    grid_seconds = time.perf_counter() - start - collect_seconds
    scale, offset = broadcast_encoding(weight, encoding.to(device))
    rounding = SoftRounding(weight, scale, offset, offset + encoding.spec.num_steps)
    nearest_error = error(rounding.nearest)
    with cpu_threads_for(flops, device):
        optimize_rounding(
            rounding,
            grad_fn,
            iterations=config.num_iterations,
            reg_param=config.reg_param,
            beta_range=config.beta_range,
            warm_start=config.warm_start,
            lr=config.lr,
            check=check,
        )
    final = rounding.hard_weight()
    adaround_error = error(final)
    if method == "sampled":
        inputs.close()
        targets.close()
    with torch.no_grad():
        qmod._parameters["weight"].data.copy_(final.to(qmod._parameters["weight"].device))
    quantizer.set_encoding(encoding)
    quantizer.freeze()
    qmod.clear_param_cache()
    ratio = float((encoding.scale / initial.scale.to(encoding.scale.device)).mean())
    seconds = time.perf_counter() - start
    return LayerRounding(
        name, method, nearest_error, adaround_error, seconds, spilled, collect_seconds, ratio, grid_seconds
    )


def apply_adaround(
    sim: Any,
    data: Any,
    config: AdaroundConfig | None = None,
    *,
    layers: list[str] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> AdaroundResult:
    """AdaRound every Conv/ConvTranspose/Linear weight of ``sim`` (or only ``layers``), in place.

    ``data``: calibration inputs (see core/ptq/calibration_batches.py). ``progress(fraction)`` is called
    as layers and iterations complete; ``cancel()`` returning True raises CancelledError (checked every
    250 iterations). Activation quantizers are restored to their previous enabled state afterwards; their
    encodings are not computed here (call ``sim.compute_encodings`` next).
    """
    config = config or AdaroundConfig()
    start = time.perf_counter()
    names = layers if layers is not None else adaroundable_layers(sim)
    batches = materialize_batches(data, config.num_samples, config.batch_size)
    device = torch.device(config.device) if config.device else _device_of(sim.model)
    saved = [(q, q.enabled) for q in sim.activation_quantizers().values()]
    result = AdaroundResult()
    try:
        if config.quantized_inputs:
            calibrate_activations(sim, batches, cancel)
        else:
            for q, _ in saved:
                q.enabled = False
        sim.compute_param_encodings()
        for i, name in enumerate(names):

            def check(step: int, i: int = i, name: str = name) -> None:
                if cancel is not None and cancel():
                    raise CancelledError(f"AdaRound cancelled at layer {name}")
                if progress is not None:
                    progress((i + step / config.num_iterations) / len(names))

            result.layers.append(_round_layer(sim, name, batches, config, device, check))
        if progress is not None:
            progress(1.0)
    finally:
        for q, enabled in saved:
            q.enabled = enabled
        for m in sim.quantized_modules().values():
            m.clear_param_cache()
    result.seconds = time.perf_counter() - start
    return result


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
