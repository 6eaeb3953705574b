"""One shared parameter tensor for all learned scales of a model, and one for all learned zero points.

Why: range learning makes every quantizer's scale (and asymmetric zero point) a trainable tensor of one
element (per-tensor) or a few. A user's optimizer steps them one by one — torch's CPU default for Adam
is the single-tensor loop, several small ops per parameter — and autograd accumulates each into its own
leaf. On the W4A4 digits net that is 64 parameters beside 53 weights, and their optimizer update cost
as much as the weights' (bench qat). Pooled, they are two parameters whatever the model's size.

Layout: ``LsqParameterBank`` holds ``scale`` (all pooled scales, one after another) and ``zero_point``
(the asymmetric quantizers' zero points; None when there are none) as nn.Parameters. Each pooled
quantizer — a ``PooledLearnableQuantizer`` — registers the same bank as its child ``lsq_bank``
(shared modules are deduplicated by ``parameters()``, ``named_parameters()`` and DDP, as for tied
weights) and reads its values through a slice:

* ``quantizer.scale`` / ``quantizer.zero_point`` are views into the bank (gradients flow through them
  on the generic paths: per-channel, per-block, CUDA); the per-tensor CPU path hands the bank and an
  index to its autograd function, whose gradient for the bank is zero except at that index. Gradients,
  including the LSQ gradient scale of each quantizer, are the unpooled ones element for element.
  A symmetric quantizer's zero point stays its own fixed buffer, as before pooling. A view has no
  ``.grad`` of its own: ``quantizer.scale_grad`` / ``zero_point_grad`` read the bank's at the slice.
* ``model.parameters()`` yields the bank, so optimizers built after ``prepare_qat`` train it; the bank
  is a plain leaf, so DDP all-reduces its gradient like any weight's.
* ``state_dict()`` is unchanged: each quantizer still saves and loads ``scale`` and ``zero_point``
  under its own keys (copied into its slice), and the bank saves nothing, so checkpoints of pooled
  and unpooled models are interchangeable. Optimizer state follows the layout (one entry per bank tensor).
* Encodings, export and ``disable_range_learning`` read the trained values through the slices.

The cost: per-quantizer optimizer settings (a different learning rate for one scale) need the pooling
undone (``unpool_learnable_quantizers``). ``prepare_qat`` pools; ``finish_qat`` unpools.

>>> bank = pool_learnable_quantizers(learnables)     # doctest: +SKIP
>>> [n for n, _ in model.named_parameters() if "lsq_bank" in n]  # doctest: +SKIP
['0.input_quantizers.0.lsq_bank.scale', '0.input_quantizers.0.lsq_bank.zero_point']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import LowbitError
from core.quant.learnable import LearnableQuantizer

BANK_NAME = "lsq_bank"


class LsqParameterBank(nn.Module):
    """The pooled scales (``scale``) and learned zero points (``zero_point``, or None) of several quantizers."""

    zero_point: nn.Parameter | None

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor | None) -> None:
        super().__init__()
        self.scale = nn.Parameter(scale)
        if zero_point is None:
            self.register_parameter("zero_point", None)
        else:
            self.zero_point = nn.Parameter(zero_point)
        self._host: tuple[Any, ...] | None = None

    def host_values(self) -> tuple[np.ndarray, np.ndarray | None]:
        """NumPy views of the CPU scale and zero-point banks (current values, no copy, no torch op)."""
        scale, zero_point = self.scale, self.zero_point
        ptrs = (scale.data_ptr(), zero_point.data_ptr() if zero_point is not None else 0)
        host = self._host
        # Checked by identity and address: ``.data =`` or a device move gives a new storage.
        if host is None or host[0] is not scale or host[1] is not zero_point or host[2] != ptrs:
            host = self._host = (
                scale,
                zero_point,
                ptrs,
                scale.detach().numpy().reshape(-1),
                zero_point.detach().numpy().reshape(-1) if zero_point is not None else None,
            )
        return host[3], host[4]

    def __getstate__(self) -> dict[str, Any]:
        # A copy's NumPy views would point at the original's memory: copies rebuild theirs.
        state = super().__getstate__()
        state["_host"] = None
        return state

    # The quantizers save and load their slices under their own keys; the bank would only duplicate them.
    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[no-untyped-def]
        pass

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):  # type: ignore[no-untyped-def]
        pass


class PooledLearnableQuantizer(LearnableQuantizer):
    """A LearnableQuantizer whose scale (and asymmetric zero point) live in a shared LsqParameterBank."""

    lsq_bank: LsqParameterBank
    _lsq_scale: slice
    _lsq_zero_point: slice | None

    @property  # type: ignore[override]
    def scale(self) -> torch.Tensor:
        return self.lsq_bank.scale[self._lsq_scale]

    @scale.setter
    def scale(self, value: torch.Tensor) -> None:
        raise LowbitError(
            "a pooled quantizer's scale is a slice of its bank: use set_encoding() to change it"
        )

    @property  # type: ignore[override]
    def zero_point(self) -> torch.Tensor:
        if self._lsq_zero_point is None:
            return self._buffers["zero_point"]  # type: ignore[return-value]
        bank_zero_point = self.lsq_bank.zero_point
        assert bank_zero_point is not None
        return bank_zero_point[self._lsq_zero_point]

    @zero_point.setter
    def zero_point(self, value: torch.Tensor) -> None:
        raise LowbitError(
            "a pooled quantizer's zero point is a slice of its bank: use set_encoding() to change it"
        )

    @property
    def scale_grad(self) -> torch.Tensor | None:
        grad = self.lsq_bank.scale.grad
        return None if grad is None else grad[self._lsq_scale]

    @property
    def zero_point_grad(self) -> torch.Tensor | None:
        bank_zero_point = self.lsq_bank.zero_point
        if self._lsq_zero_point is None or bank_zero_point is None or bank_zero_point.grad is None:
            return None
        return bank_zero_point.grad[self._lsq_zero_point]

    def _lsq_sources(self) -> tuple[torch.Tensor, torch.Tensor, int, int, float, float]:
        bank = self.lsq_bank
        if not bank.scale.is_cpu:
            return super()._lsq_sources()
        scales, zero_points = bank.host_values()
        s_index = self._lsq_scale.start
        if self._lsq_zero_point is None:
            fixed = self._buffers["zero_point"]
            assert fixed is not None
            return bank.scale, fixed, s_index, 0, float(scales[s_index]), fixed.item()
        assert bank.zero_point is not None and zero_points is not None
        z_index = self._lsq_zero_point.start
        return (
            bank.scale,
            bank.zero_point,
            s_index,
            z_index,
            float(scales[s_index]),
            float(zero_points[z_index]),
        )

    def unpool(self) -> LearnableQuantizer:
        """Back to a LearnableQuantizer with its own parameters holding the current values."""
        scale = self.scale.detach().clone()
        zero_point = None if self._lsq_zero_point is None else self.zero_point.detach().clone()
        del self._modules[BANK_NAME]
        for name in ("_lsq_scale", "_lsq_zero_point"):
            self.__dict__.pop(name, None)
        self.__class__ = LearnableQuantizer  # type: ignore[assignment]
        self.scale = nn.Parameter(scale)
        if zero_point is not None:
            self.zero_point = nn.Parameter(zero_point)
        return self

    def disable_range_learning(self) -> None:
        self.unpool().disable_range_learning()

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[no-untyped-def]
        for name, value in self._pooled_tensors():
            destination[prefix + name] = value if keep_vars else value.detach()
        super()._save_to_state_dict(destination, prefix, keep_vars)  # a symmetric zero point's buffer

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        for name, target in self._pooled_tensors():
            key = prefix + name
            if key in unexpected_keys:  # the base class knows only registered parameters and buffers
                unexpected_keys.remove(key)
            if key not in state_dict:
                if strict:
                    missing_keys.append(key)
                continue
            value = state_dict[key]
            if value.shape != target.shape:
                error_msgs.append(
                    f"size mismatch for {key}: copying a param with shape {tuple(value.shape)}, "
                    f"the shape in the current model is {tuple(target.shape)}."
                )
                continue
            with torch.no_grad():
                target.copy_(value)

    def _pooled_tensors(self) -> list[tuple[str, torch.Tensor]]:
        with torch.no_grad():
            found = [("scale", self.scale)]
            if self._lsq_zero_point is not None:
                found.append(("zero_point", self.zero_point))
        return found


def pool_learnable_quantizers(quantizers: list[Any]) -> LsqParameterBank | None:
    """Move the scales and learned zero points of ``quantizers`` (LearnableQuantizers with their own
    parameters) into one new LsqParameterBank and return it; None when there is nothing to pool.

    Quantizers on different devices, or whose scale was set not to train, keep their own parameters.
    """
    own = [
        q
        for q in quantizers
        if type(q) is LearnableQuantizer and isinstance(q.scale, nn.Parameter) and q.scale.requires_grad
    ]
    if not own or len({q.scale.device for q in own}) != 1:
        return None
    scales: list[torch.Tensor] = []
    zero_points: list[torch.Tensor] = []
    layout: list[tuple[slice, slice | None]] = []
    s_at = z_at = 0
    for q in own:
        scale = q.scale.detach().reshape(-1)
        scales.append(scale)
        s_slice = slice(s_at, s_at + scale.numel())
        s_at = s_slice.stop
        z_slice = None
        if isinstance(q.zero_point, nn.Parameter):
            zero_point = q.zero_point.detach().reshape(-1)
            zero_points.append(zero_point)
            z_slice = slice(z_at, z_at + zero_point.numel())
            z_at = z_slice.stop
        layout.append((s_slice, z_slice))
    bank = LsqParameterBank(
        torch.cat(scales).to(torch.float32), torch.cat(zero_points).to(torch.float32) if zero_points else None
    )
    for q, (s_slice, z_slice) in zip(own, layout, strict=True):
        del q._parameters["scale"]
        if z_slice is not None:
            del q._parameters["zero_point"]
        q.__class__ = PooledLearnableQuantizer
        q.__dict__["_lsq_scale"] = s_slice
        q.__dict__["_lsq_zero_point"] = z_slice
        q._modules[BANK_NAME] = bank
    return bank


def unpool_learnable_quantizers(model: nn.Module) -> None:
    """Give every pooled quantizer in ``model`` its own parameters again (current values)."""
    for module in list(model.modules()):
        if isinstance(module, PooledLearnableQuantizer):
            module.unpool()
