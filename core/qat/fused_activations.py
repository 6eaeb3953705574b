"""QAT on CPU: a clipping activation (ReLU, ReLU6, Hardtanh) and its output quantizer in one pass.

Quantizing ``hardtanh(x, amin, amax)`` equals clamping x's grid levels to the levels of amin and
amax (the rounding is monotone), and its gradient passes where both the activation and the grid do,
one interval of x (core/quant/ste.py: ``fused_grid``). So the activation's own forward pass, its
buffer and its backward pass drop out of the training step — values and gradients unchanged, as
QuantSim's inference path already does for ReLU (core/quantsim/mixin.py, ReluQuantizationMixin).
Target hardware fuses the activation into the requantization the same way.

prepare_qat swaps these modules' classes to a subclass with that forward (``fuse_activations``) and
finish_qat swaps them back (``unfuse_activations``); names, parameters and state dicts do not change.
Anything the fusion does not cover — no grad, in-place activations, input quantizers, a
non-per-tensor grid, tiny or non-float32/non-CPU tensors, LSQ without numba — runs the module's
ordinary forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.quant.learnable import LearnableQuantizer, lsq_fake_quantize_clipped
from core.quant.quantizer import Quantizer
from core.quant.ste import cpu_float32, fake_quantize_ste, use_ste_kernel
from core.quantsim.mixin import QuantizationMixin

_FUSED_CLASSES: dict[type, type] = {}


class _ClipQuantizationTraining(nn.Module):
    """Placed first in the MRO of a quantized ReLU/ReLU6/Hardtanh while QAT runs."""

    _lowbit_unfused: type

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and torch.is_grad_enabled():
            fused = _fused_forward(self, args[0])
            if fused is not None:
                return fused
        return super().forward(*args, **kwargs)


def fuse_activations(model: nn.Module) -> list[str]:
    """Give every quantized ReLU/Hardtanh in ``model`` the fused training forward; returns their names."""
    names = []
    for name, module in model.named_modules():
        cls = type(module)
        if (
            isinstance(module, QuantizationMixin)
            and isinstance(module, nn.ReLU | nn.Hardtanh)
            and not issubclass(cls, _ClipQuantizationTraining)
        ):
            if cls not in _FUSED_CLASSES:
                _FUSED_CLASSES[cls] = type(
                    f"QatFused{cls.__name__}", (_ClipQuantizationTraining, cls), {"_lowbit_unfused": cls}
                )
            module.__class__ = _FUSED_CLASSES[cls]
            names.append(name)
    return names


def unfuse_activations(model: nn.Module) -> None:
    """Undo ``fuse_activations``."""
    for module in model.modules():
        if isinstance(module, _ClipQuantizationTraining):
            module.__class__ = type(module)._lowbit_unfused


def _fused_forward(module: Any, x: Any) -> torch.Tensor | None:
    if not (isinstance(x, torch.Tensor) and x.requires_grad and cpu_float32(x)):
        return None
    if getattr(module, "inplace", False) or len(module.output_quantizers) != 1:
        return None
    if any(q is not None and q.enabled for q in module.input_quantizers):
        return None
    q = module.output_quantizers[0]
    if (
        q is None
        or not q.enabled
        or q._observing
        or q.spec.dtype != "int"
        or q.spec.granularity != "per_tensor"
    ):
        return None
    if isinstance(q, LearnableQuantizer):  # always calibrated
        return lsq_fake_quantize_clipped(x, q, _clip_bounds(module))
    if type(q) is not Quantizer or q.scale.numel() == 0 or not use_ste_kernel(x):
        return None
    scale, inv, lo, hi = q._inference_params(x)
    return fake_quantize_ste(x, scale, inv, lo, hi, activation=_clip_bounds(module))


def _clip_bounds(module: Any) -> tuple[float, float]:
    return (
        (0.0, float("inf")) if isinstance(module, nn.ReLU) else (float(module.min_val), float(module.max_val))
    )
