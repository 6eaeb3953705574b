"""Fake quantization with a learnable scale and offset (LSQ / LSQ+ gradients).

Forward, on the unsigned grid of core/quant/encoding.py with a float zero point ``z = −offset``:

    x̂ = (clamp(round(x/s + z), 0, Q) − z) · s

Backward (straight-through through ``round``):

    ∂x̂/∂x = 1 inside the grid, 0 outside
    ∂x̂/∂s = round(x/s + z) − z − x/s inside, (0 or Q) − z outside       (LSQ)
    ∂x̂/∂z = 0 inside, −s outside                                        (LSQ+)

and both encoding gradients are multiplied by the LSQ gradient scale
``g = 1 / sqrt(n · Q_p)`` (n = elements per group, Q_p = number of positive levels), which keeps
the step size's update comparable to the weights' updates whatever the tensor size.

A collapsed range (s == 0, or a step that drives s negative) would divide by zero; the forward
uses ``max(s, MIN_LEARNED_SCALE)`` through a straight-through clamp, so the output stays finite
and the gradient still reaches ``s`` and can move it back up.

Per-tensor (activations, mostly) runs a small custom autograd function (gradients equal to
``torch._fake_quantize_learnable_per_tensor_affine``'s, which is slower): on CPU from vectorised
element-wise passes, elsewhere the fused fake-quant kernel forward; per-channel uses ``torch._fake_quantize_learnable_per_channel_affine``; per-block encodings
and non-float32 inputs use the same math written with differentiable tensor ops.

>>> s = torch.tensor([0.1], requires_grad=True); z = torch.tensor([0.0])
>>> y = learnable_fake_quantize(torch.tensor([0.26, 5.0]), QuantSpec(bitwidth=4), s, z)
>>> [round(v, 2) for v in y.tolist()]
[0.3, 1.5]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import LowbitError
from core.quant.encoding import Encoding, QuantSpec
from core.quant.grouping import block_fake_quant_layout
from core.quant.primitives import fake_quantize_raw
from core.quant.quantizer import Quantizer
from core.quant.ste import (
    NO_ACTIVATION,
    cpu_float32,
    fake_quantize_forward,
    fused_levels,
    fuses_activations,
    lsq_backward,
)

# Below this a step size is treated as collapsed (the encodings' own floor is 1e-10; a learned
# scale gets a little more headroom so 1/s stays far from float32 overflow).
MIN_LEARNED_SCALE = 1e-8
_MIN_SCALE32 = np.float32(MIN_LEARNED_SCALE)


def positive_levels(spec: QuantSpec) -> int:
    """Q_p of LSQ: the number of grid points above zero (127 for symmetric int8, 255 for uint8)."""
    return 2 ** (spec.bitwidth - 1) - 1 if spec.symmetric else spec.num_steps


def lsq_grad_factor(x: torch.Tensor, spec: QuantSpec, groups: int) -> float:
    """LSQ gradient scale 1/sqrt(n·Q_p) with n = elements of x per encoding group."""
    per_group = max(1, x.numel() // max(1, groups))
    return 1.0 / math.sqrt(per_group * positive_levels(spec))


def safe_scale(scale: torch.Tensor) -> torch.Tensor:
    """max(scale, MIN_LEARNED_SCALE) in the forward; identity for the gradient (straight-through)."""
    return scale + (scale.clamp_min(MIN_LEARNED_SCALE) - scale).detach()


def learnable_fake_quantize(
    x: torch.Tensor,
    spec: QuantSpec,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    grad_factor: float | None = None,
) -> torch.Tensor:
    """Quantize-dequantize x with gradients to x, ``scale`` and (float) ``zero_point``.

    ``scale``/``zero_point`` are (groups,) float32 tensors; either may require grad. A zero
    point that must stay fixed (symmetric encodings) is passed without requires_grad.
    """
    groups = scale.numel()
    if grad_factor is None:
        grad_factor = lsq_grad_factor(x, spec, groups)
    qmax = spec.num_steps
    if spec.granularity == "per_tensor" and cpu_float32(x):
        # The collapsed-scale floor is applied inside (straight-through, like safe_scale).
        consts = (0, 0, scale.detach().item(), zero_point.detach().item(), qmax, grad_factor, NO_ACTIVATION)
        return _LsqPerTensorCpu.apply(x, scale, zero_point, consts)
    s = safe_scale(scale)
    if x.dtype == torch.float32 and spec.granularity in ("per_tensor", "per_channel"):
        if spec.granularity == "per_tensor":
            return _LsqPerTensor.apply(x, s, zero_point, qmax, grad_factor)
        axis = spec.axis % x.dim()  # type: ignore[operator]
        return torch._fake_quantize_learnable_per_channel_affine(x, s, zero_point, axis, 0, qmax, grad_factor)
    return _reference(x, spec, s, zero_point, grad_factor).to(x.dtype)


_FQ_ENABLED = torch.ones(1, dtype=torch.long)


class _LsqPerTensor(torch.autograd.Function):
    """Per-tensor LSQ/LSQ+: torch's fused fake-quant kernel forward, one fused re-quantization backward.

    PyTorch's learnable per-tensor kernel is slow in its backward, and materialising the in-grid mask
    and ∂x̂/∂s in the forward costs five extra passes over x plus their memory. Here the forward saves
    only x (autograd keeps it alive for neighbouring ops anyway; the output is *not* saved, so an
    in-place op on it such as ReLU(inplace=True) stays legal). The backward re-runs the fused kernel
    that returns x̂ and the mask in one pass; with ∂x̂/∂s = (x̂ − x·mask)/s

        grad_x = grad·mask,  grad_s = g·(⟨grad, x̂⟩ − ⟨grad_x, x⟩)/s,  grad_z = g·s·(Σgrad_x − Σgrad)

    which is one multiply and dot products, no further temporaries.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmax: int, g: float
    ) -> torch.Tensor:
        z_int = zero_point.detach().round().clamp(0, qmax).to(torch.int32)
        s = scale.detach()
        ctx.save_for_backward(x, s, z_int)
        ctx.g, ctx.qmax = g, qmax
        ctx.needs = (ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        return torch.fake_quantize_per_tensor_affine(x, s, z_int, 0, qmax)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        x, s, z_int = ctx.saved_tensors
        y, mask = torch._fake_quantize_per_tensor_affine_cachemask_tensor_qparams(
            x, s, z_int, _FQ_ENABLED, 0, ctx.qmax
        )
        grad = grad.contiguous()
        grad_x = grad * mask
        grad_s = grad_z = None
        if ctx.needs[0]:
            flat_g, flat_gx = grad.reshape(-1), grad_x.reshape(-1)
            dot = torch.dot(flat_g, y.reshape(-1)) - torch.dot(flat_gx, x.reshape(-1))
            grad_s = (dot * ctx.g / s.reshape(())).reshape(1)
        if ctx.needs[1]:
            grad_z = ((grad_x.sum() - grad.sum()) * s.reshape(()) * ctx.g).reshape(1)
        return grad_x, grad_s, grad_z, None, None


class _LsqPerTensorCpu(torch.autograd.Function):
    """Per-tensor LSQ/LSQ+ on CPU through core/quant/ste.py (the fused kernels are scalar loops there).

    Forward: x̂ = clamp(nearbyint(x·(1/s)), lo, hi)·s with lo = −z, hi = Q − z (bit-exact with the fused
    kernel); only x is saved, not the output, so in-place ops after it stay legal. Backward, with
    c = clamp(nearbyint(x/s), lo, hi), the in-grid mask and ∂x̂/∂s = c − mask·x/s:

        grad_x = grad·mask,  grad_s = g·Σ grad·(c − mask·x/s),  grad_z = −g·s·Σ grad·(1 − mask)

    (one fused pass with numba; the scale's sum per element, which keeps its float32 digits).

    ``scale`` and ``zero_point`` are the tensors the gradients go to, and s, z sit at flat index
    ``s_index``/``z_index`` in them: a quantizer's own (1,) parameters at index 0, or a sim's shared
    parameter bank (core/quant/learnable_bank.py), whose gradient is then zero except at that index.
    Their values come in ``consts`` as Python floats (read without a torch op or device sync); a
    collapsed scale is floored at MIN_LEARNED_SCALE in the forward while its gradient passes straight
    through, as safe_scale does.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        scale: torch.Tensor,
        zero_point: torch.Tensor,
        consts: tuple[int, int, float, float, int, float, tuple[float, float]],
    ) -> torch.Tensor:
        s_index, z_index, s_value, z_value, qmax, g, activation = consts
        # Python/numpy scalars in float32 arithmetic: the values torch would compute, without its per-op cost.
        s32 = max(np.float32(s_value), _MIN_SCALE32)
        s, inv = float(s32), float(np.float32(1.0) / s32)  # the float32 reciprocal, as the fused kernel uses
        z = min(max(round(z_value), 0), qmax)  # half to even, as torch.round
        lo, hi = float(-z), float(qmax - z)
        ctx.save_for_backward(x)
        ctx.consts = (s, inv, lo, hi, g, activation, scale.shape, s_index, zero_point.shape, z_index)
        lo_x, hi_x = fused_levels(inv, lo, hi, *activation)
        return fake_quantize_forward(x, s, inv, lo_x, hi_x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        s, inv, lo, hi, g, activation, s_shape, s_index, z_shape, z_index = ctx.consts
        needs = ctx.needs_input_grad
        grad_x, dot_d, off_grid = lsq_backward(grad, x, inv, lo, hi, activation)
        grad_s = _one_hot(s_shape, s_index, g * dot_d) if needs[1] else None
        grad_z = _one_hot(z_shape, z_index, -g * s * off_grid) if needs[2] else None
        return grad_x if needs[0] else None, grad_s, grad_z, None


def _one_hot(shape: torch.Size, index: int, value: float) -> torch.Tensor:
    """A float32 CPU tensor of ``shape``: ``value`` at flat ``index``, zero elsewhere."""
    if index == 0 and math.prod(shape) == 1:
        return torch.full(shape, value)
    # Built in NumPy: half the cost of torch.zeros and a write through a view.
    out = np.zeros(math.prod(shape), dtype=np.float32)
    out[index] = value
    grad = torch.from_numpy(out)
    return grad if grad.shape == shape else grad.reshape(shape)


def lsq_fake_quantize_clipped(
    x: torch.Tensor, quantizer: LearnableQuantizer, activation: tuple[float, float]
) -> torch.Tensor | None:
    """``quantizer(hardtanh(x, *activation))`` in one pass with LSQ gradients, or None where not fused
    (not per-tensor float32 on CPU, or numba missing: see core/quant/ste.py)."""
    if quantizer.spec.granularity != "per_tensor" or not cpu_float32(x) or not fuses_activations(lsq=True):
        return None
    return quantizer.lsq_per_tensor_cpu(x, activation)


def _reference(
    x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, zero_point: torch.Tensor, grad_factor: float
) -> torch.Tensor:
    """The same function from differentiable ops (per-block layouts, float16/bfloat16 inputs)."""
    # Scale the gradients reaching s and z by g without changing their forward value.
    s = scale * grad_factor + (scale - scale * grad_factor).detach()
    z = zero_point * grad_factor + (zero_point - zero_point * grad_factor).detach()
    z = z + (z.round().clamp(0, spec.num_steps) - z).detach()
    xf = x.float()
    if spec.granularity == "per_block":
        y, perm_shape, inverse = block_fake_quant_layout(xf, spec)
        view = [y.shape[0]] + [1] * (y.dim() - 1)
        out = _grid(y, s.reshape(view), z.reshape(view), spec.num_steps)
        return out.reshape(perm_shape).permute(*inverse)
    if spec.granularity == "per_channel":
        shape = [1] * xf.dim()
        shape[spec.axis % xf.dim()] = -1  # type: ignore[operator]
        return _grid(xf, s.reshape(shape), z.reshape(shape), spec.num_steps)
    return _grid(xf, s.reshape(()), z.reshape(()), spec.num_steps)


def _grid(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmax: int) -> torch.Tensor:
    u = x / s + z
    q = u + (torch.round(u) - u).detach()
    return (q.clamp(0, qmax) - z) * s


class LearnableQuantizer(Quantizer):
    """A calibrated Quantizer whose scale (and, when asymmetric, zero point) are nn.Parameters.

    Made by ``Quantizer.enable_range_learning()`` (the module's class is swapped in place, so its
    name, position in the model and state-dict keys ``scale``/``zero_point`` stay the same). The
    zero point is a float while it learns; ``encoding`` rounds it onto the integer grid, and
    ``disable_range_learning()`` bakes the learned values back into the plain int32 buffers.
    """

    def set_encoding(self, encoding: Encoding) -> None:
        if self.frozen:
            return
        scale = encoding.scale.detach().reshape(-1).to(self.scale.device, torch.float32)
        zero_point = encoding.zero_point.reshape(-1).to(self.scale.device, torch.float32)
        if scale.shape != self.scale.shape:
            raise LowbitError(
                f"encoding has {scale.numel()} groups but this range-learning quantizer has {self.scale.numel()}; "
                "call disable_range_learning() before changing granularity"
            )
        self.spec = encoding.spec
        with torch.no_grad():
            # In place: an optimizer holding these parameters keeps training the new values.
            self.scale.copy_(scale)
            self.zero_point.copy_(zero_point)

    def clear_encoding(self) -> None:
        if self.frozen:
            return
        raise LowbitError(
            "a range-learning quantizer always has an encoding; call disable_range_learning() first"
        )

    @property
    def encoding(self) -> Encoding | None:
        scale = self.scale.detach().clamp_min(MIN_LEARNED_SCALE).clone()
        offset = -self.zero_point.detach().round().clamp(0, self.spec.num_steps).to(torch.float32)
        return Encoding(self.spec, scale, offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled or not x.is_floating_point():
            return x
        if self._observing:
            self.range_setter.observe(x)
            return x
        if not torch.is_grad_enabled():
            enc = self.encoding
            assert enc is not None
            return fake_quantize_raw(x, self.spec, enc.scale, enc.zero_point)
        if self.spec.granularity == "per_tensor" and cpu_float32(x):
            return self.lsq_per_tensor_cpu(x, NO_ACTIVATION)
        return learnable_fake_quantize(x, self.spec, self.scale, self.zero_point)

    def lsq_per_tensor_cpu(self, x: torch.Tensor, activation: tuple[float, float]) -> torch.Tensor:
        """LSQ fake-quant of a float32 CPU ``x`` on this per-tensor grid, after a fused clipping
        activation ``(amin, amax)`` (NO_ACTIVATION: none)."""
        scale, zero_point, s_index, z_index, s_value, z_value = self._lsq_sources()
        g = lsq_grad_factor(x, self.spec, 1)
        consts = (s_index, z_index, s_value, z_value, self.spec.num_steps, g, activation)
        return _LsqPerTensorCpu.apply(x, scale, zero_point, consts)

    def _lsq_sources(self) -> tuple[torch.Tensor, torch.Tensor, int, int, float, float]:
        """(scale tensor, zero-point tensor, index of s in it, index of z in it, s, z) of a per-tensor grid."""
        scale, zero_point = self.scale, self.zero_point
        return scale, zero_point, 0, 0, scale.detach().item(), zero_point.detach().item()

    @property
    def scale_grad(self) -> torch.Tensor | None:
        """The gradient accumulated for this quantizer's scale (None before a backward)."""
        return self.scale.grad

    @property
    def zero_point_grad(self) -> torch.Tensor | None:
        """The gradient accumulated for this quantizer's zero point (None if it is fixed or before a backward)."""
        return self.zero_point.grad

    def disable_range_learning(self) -> None:
        """Back to a plain Quantizer with the learned encoding (rounded zero point) in int32 buffers."""
        enc = self.encoding
        assert enc is not None
        for name in ("scale", "zero_point"):
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
        self.register_buffer("scale", enc.scale.clone())
        self.register_buffer("zero_point", enc.zero_point.clone())
        self.__class__ = Quantizer  # type: ignore[assignment]

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):  # type: ignore[no-untyped-def]
        # Shapes are fixed once learning starts: copy in place (the base class re-creates buffers).
        nn.Module._load_from_state_dict(
            self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def enable_range_learning(quantizer: Quantizer) -> LearnableQuantizer:
    """Turn a calibrated integer Quantizer into a LearnableQuantizer in place and return it.

    Symmetric encodings learn only the scale (their zero point is pinned to the grid's middle);
    asymmetric ones learn scale and zero point. Already-learnable quantizers are returned as is.
    """
    if isinstance(quantizer, LearnableQuantizer):
        return quantizer
    if quantizer.spec.dtype != "int":
        raise LowbitError(
            "range learning needs an integer quantizer; float16 quantizers have no scale to learn"
        )
    enc = quantizer.encoding
    if enc is None:
        raise LowbitError(
            "range learning starts from a calibrated encoding; run QuantSim.compute_encodings(data) first"
        )
    device = quantizer.scale.device
    scale = enc.scale.to(device, torch.float32).reshape(-1).clone()
    zero_point = enc.zero_point.to(device, torch.float32).reshape(-1).clone()
    del quantizer._buffers["scale"], quantizer._buffers["zero_point"]
    quantizer.scale = nn.Parameter(scale)
    if quantizer.spec.symmetric:
        quantizer.register_buffer("zero_point", zero_point)
    else:
        quantizer.zero_point = nn.Parameter(zero_point)
    quantizer.__class__ = LearnableQuantizer
    return quantizer  # type: ignore[return-value]
