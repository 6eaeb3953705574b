"""The quantizer module: a range setter while calibrating, a fused fake-quant op afterwards.

States: ``enabled`` (False = identity), ``observing`` (pass-through while the range setter
collects statistics), and calibrated (scale/zero_point buffers set). ``frozen`` quantizers
keep their encoding when compute_encodings runs again (AIMET's allow_overwrite(False)).

>>> q = Quantizer(QuantSpec(bitwidth=8), scheme="min_max")
>>> with q.observing():
...     _ = q(torch.linspace(-1, 1, 11))
>>> y = q(torch.tensor([0.5]))
>>> abs(float(y) - 0.5) <= float(q.encoding.scale) / 2
True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from core.errors import LowbitError
from core.quant.encoding import Encoding, QuantSpec
from core.quant.primitives import (
    broadcast_encoding,
    fake_quantize_half_away,
    fake_quantize_inference,
    fake_quantize_raw,
)
from core.quant.range_setters import RangeSetter, make_range_setter
from core.quant.ste import fake_quantize_ste, use_ste_kernel


class Quantizer(nn.Module):
    """Fake-quantizes one tensor (a weight, or an activation at one module input/output)."""

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(
        self, spec: QuantSpec, scheme: str = "min_max", scheme_options: dict[str, Any] | None = None
    ):
        super().__init__()
        self.spec = spec
        self.scheme = scheme
        self.scheme_options = dict(scheme_options or {})
        self.range_setter: RangeSetter = make_range_setter(scheme, spec, **self.scheme_options)
        self.enabled = True
        self.frozen = False
        self._observing = False
        # How inference rounds (a target's arithmetic, core/quantsim/target.py): "half_even" is torch's
        # fused kernel and ONNX QuantizeLinear; "half_away" is AIMET's simulation kernel. Training
        # (straight-through gradients) always uses the fused kernels.
        self.rounding = "half_even"
        # Inference-parameter cache. It holds the scale/zero-point tensors it was built from: a key of
        # tensor addresses alone goes stale when a new encoding lands at a freed old address.
        self._fast_key: tuple | None = None  # type: ignore[type-arg]
        self._fast_src: tuple = ()  # type: ignore[type-arg]
        self._fast: tuple = ()  # type: ignore[type-arg]
        # Empty buffers = not calibrated yet; they become (groups,) tensors once an encoding is set.
        self.register_buffer("scale", torch.empty(0))
        self.register_buffer("zero_point", torch.empty(0, dtype=torch.int32))

    # -- configuration -------------------------------------------------------------------------
    def set_spec(self, **changes: Any) -> None:
        """Change bitwidth/symmetry/granularity; the encoding is dropped and must be recomputed."""
        self.spec = replace(self.spec, **changes)
        self.set_scheme(self.scheme, **self.scheme_options)

    def set_scheme(self, scheme: str, **options: Any) -> None:
        self.scheme, self.scheme_options = scheme, dict(options)
        self.range_setter = make_range_setter(scheme, self.spec, **self.scheme_options)
        self.clear_encoding()

    # -- encodings -----------------------------------------------------------------------------
    @property
    def is_calibrated(self) -> bool:
        return self.spec.dtype == "float" or self.scale.numel() > 0

    @property
    def encoding(self) -> Encoding | None:
        if self.spec.dtype == "float":
            return Encoding(self.spec)
        if self.scale.numel() == 0:
            return None
        return Encoding(self.spec, self.scale.detach().clone(), -self.zero_point.detach().to(torch.float32))

    def set_encoding(self, encoding: Encoding) -> None:
        if self.frozen:
            return
        self.spec = encoding.spec
        device = self.scale.device
        self.scale = encoding.scale.detach().to(device, torch.float32).reshape(-1).clone()
        self.zero_point = encoding.zero_point.to(device).reshape(-1).clone()

    def clear_encoding(self) -> None:
        if self.frozen:
            return
        self.scale = torch.empty(0, device=self.scale.device)
        self.zero_point = torch.empty(0, dtype=torch.int32, device=self.scale.device)

    def freeze(self) -> None:
        self.frozen = True

    def unfreeze(self) -> None:
        self.frozen = False

    def enable_range_learning(self) -> Quantizer:
        """Train scale (and an asymmetric zero point) with LSQ gradients; see core/quant/learnable.py."""
        from core.quant.learnable import enable_range_learning  # learnable.py builds on this module

        return enable_range_learning(self)

    @contextmanager
    def observing(self) -> Iterator[None]:
        """Pass-through while collecting statistics; computes the encoding on exit."""
        self.range_setter.reset()
        self._observing = True
        try:
            yield
        finally:
            self._observing = False
        if not self.frozen and self.range_setter.observed:
            self.set_encoding(self.range_setter.compute())

    def compute_encoding_from(self, tensor: torch.Tensor) -> None:
        """Calibrate on one static tensor (a weight) in one call."""
        if self.frozen or not self.enabled:
            return
        self.range_setter.reset()
        self.range_setter.observe(tensor)
        self.set_encoding(self.range_setter.compute())

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled or not x.is_floating_point():
            return x
        if self._observing:
            self.range_setter.observe(x)
            return x
        if self.spec.dtype == "int" and self.scale.numel() == 0:
            raise LowbitError(
                "quantizer has no encoding; run QuantSim.compute_encodings(data) or load_encodings(path) first"
            )
        if self.spec.dtype == "int" and not (
            torch.is_grad_enabled() and (x.requires_grad or self.scale.requires_grad)
        ):
            return self._fake_quantize(x, self._inference_params(x))
        if (
            self.spec.dtype == "int"
            and self.spec.granularity == "per_tensor"
            and not self.scale.requires_grad
            and use_ste_kernel(x)
        ):
            return fake_quantize_ste(x, *self._inference_params(x))  # training on CPU (see core/quant/ste.py)
        return fake_quantize_raw(x, self.spec, self.scale, self.zero_point)

    def quantize_fresh_output(self, x: torch.Tensor) -> torch.Tensor:
        """Like ``self(x)``, but may overwrite ``x``: for a module's freshly computed output only.

        Writing in place saves allocating (and page-faulting) a second activation-sized buffer,
        a large part of QuantSim's inference overhead on CPU.
        """
        if (
            type(self) is Quantizer
            and self.enabled
            and not self._observing
            and self.spec.dtype == "int"
            and self.scale.numel() > 0
            and not (torch.is_grad_enabled() and x.requires_grad)
            and x.is_floating_point()
        ):
            return self._fake_quantize(x, self._inference_params(x), inplace=True)
        return self(x)

    def quantize_relu_input(self, x: torch.Tensor) -> torch.Tensor | None:
        """``self(relu(x))`` in one pass when this grid starts at ≥ 0 (see ReluQuantizationMixin), else None."""
        if not (
            type(self) is Quantizer
            and self.enabled
            and not self._observing
            and self.spec.dtype == "int"
            and self.spec.granularity == "per_tensor"
            and self.scale.numel() > 0
            and x.is_floating_point()
            and not (torch.is_grad_enabled() and x.requires_grad)
        ):
            return None
        params = self._inference_params(x)
        if params[2] < 0:  # a signed grid represents negative values: ReLU's clipping is needed
            return None
        return self._fake_quantize(x, params)

    def _fake_quantize(self, x: torch.Tensor, params: tuple, inplace: bool = False) -> torch.Tensor:  # type: ignore[type-arg]
        """Inference fake-quant with ``_inference_params`` (scale, 1/scale, lo, hi), rounded as ``rounding`` says."""
        scale, inv, lo, hi = params
        if self.rounding == "half_away":
            return fake_quantize_half_away(x, scale, lo, hi, inplace=inplace)
        return fake_quantize_inference(x, scale, inv, lo, hi, inplace=inplace)

    def _inference_params(self, x: torch.Tensor) -> tuple:  # type: ignore[type-arg]
        """(scale, 1/scale, lo, hi) shaped for x, cached until the encoding changes."""
        key = (
            x.shape if self.spec.granularity == "per_block" else x.dim(),
            x.device,
            self.spec,
            self.scale._version,
            self.zero_point._version,
        )
        src = self._fast_src
        if self._fast_key == key and len(src) == 2 and src[0] is self.scale and src[1] is self.zero_point:
            return self._fast
        spec = self.spec
        scale = self.scale.detach().float()
        inv = 1.0 / scale
        lo = (-self.zero_point).float()
        hi = spec.num_steps - self.zero_point.float()
        if spec.granularity == "per_tensor":
            params: tuple = (float(scale), float(inv), float(lo), float(hi))  # type: ignore[type-arg]
        elif spec.granularity == "per_channel":
            shape = [1] * x.dim()
            shape[spec.axis % x.dim()] = -1  # type: ignore[operator]
            params = tuple(t.reshape(shape) for t in (scale, inv, lo, hi))
        else:
            full_scale, full_offset = broadcast_encoding(x, Encoding(spec, scale, -self.zero_point.float()))
            params = (full_scale, 1.0 / full_scale, full_offset, spec.num_steps + full_offset)
        self._fast_key, self._fast_src, self._fast = key, (self.scale, self.zero_point), params
        return params

    def extra_repr(self) -> str:
        s = self.spec
        gran = s.granularity if s.granularity == "per_tensor" else f"{s.granularity}(axis={s.axis})"
        state = "enabled" if self.enabled else "disabled"
        return f"{s.dtype}{s.bitwidth}, {'sym' if s.symmetric else 'asym'}, {gran}, {self.scheme}, {state}"

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):  # type: ignore[no-untyped-def]
        # Encodings are (groups,) tensors whose size is unknown before calibration: adopt the stored shape.
        for name in ("scale", "zero_point"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], device=getattr(self, name).device))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
