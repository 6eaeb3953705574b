"""Quantized modules: the original module's class swapped in place for Quantized<Class>.

Swapping the class (instead of wrapping) keeps module and parameter names unchanged
(``conv1.weight``), so encodings, state dicts and ONNX names line up with the FP model, and
``sim.model`` stays an ordinary nn.Module users can train in their own loops.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from core.quant.quantizer import Quantizer

_CLASS_CACHE: dict[type, type] = {}


class QuantizationMixin(nn.Module):
    """Quantizes inputs, parameters and outputs around the original class's forward.

    Attributes added to the module: ``input_quantizers`` (ModuleList, None where an input is
    not quantized), ``output_quantizers`` (ModuleList), ``param_quantizers`` (ModuleDict),
    ``onnx_type`` (str).
    """

    input_quantizers: nn.ModuleList
    output_quantizers: nn.ModuleList
    param_quantizers: nn.ModuleDict
    onnx_type: str

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        iq = self.input_quantizers
        if len(iq):
            args = tuple(
                q(a) if q is not None and isinstance(a, torch.Tensor) else a
                for a, q in zip(args, list(iq) + [None] * (len(args) - len(iq)), strict=False)
            )
        swapped = self._swap_in_quantized_params()
        try:
            # An activation the target computes node by node (core/quantsim/decomposed.py).
            per_node = self.__dict__.get("_lowbit_per_node")
            out = per_node(self, args[0]) if per_node is not None and len(args) == 1 and not kwargs else None
            if out is None:
                out = super().forward(*args, **kwargs)
        finally:
            if swapped:
                self._parameters.update(swapped)
        oq = self.output_quantizers
        if len(oq):
            if isinstance(out, torch.Tensor):
                q = cast("Quantizer | None", oq[0])
                if q is not None:
                    out = q.quantize_fresh_output(out) if _is_fresh(out, args) else q(out)
            elif isinstance(out, tuple):
                out = tuple(
                    q(o) if q is not None and isinstance(o, torch.Tensor) else o
                    for o, q in zip(out, list(oq) + [None] * (len(out) - len(oq)), strict=False)
                )
        return out

    def train(self, mode: bool = True) -> QuantizationMixin:
        """nn.Module.train, with the quantizer containers' subtrees flagged without nn.Module's walk.

        A training loop calls ``model.train()`` every step; a QuantSim's quantizers and their
        ModuleList/ModuleDict holders are most of the modules it visits (about 200 of 260 on the digits
        net). Where a module keeps nn.Module's own ``train`` and ``__setattr__`` the flag is written
        directly (what nn.Module.train would do); any other module gets its own ``train(mode)`` call,
        and an original class with its own ``train`` runs it unchanged.
        """
        if getattr(type(self), "_lowbit_original", nn.Module).train is not nn.Module.train:
            return super().train(mode)  # the original class's own train() keeps its say
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for name, module in self._modules.items():
            if module is None:
                continue
            if name in _QUANTIZER_HOLDERS:
                _set_training(module, mode)
            else:
                module.train(mode)
        return self

    def _swap_in_quantized_params(self) -> dict[str, Any]:
        swapped: dict[str, Any] = {}
        for name, module in self.param_quantizers.items():
            q = cast("Quantizer | None", module)
            if q is None or not q.enabled:
                continue
            p = self._parameters[name]
            if p is None:
                continue
            swapped[name] = p
            self._parameters[name] = self._quantized_param(name, p, q)  # type: ignore[assignment]
        return swapped

    def _quantized_param(self, name: str, p: torch.Tensor, q: Quantizer) -> torch.Tensor:
        if torch.is_grad_enabled() and (p.requires_grad or q.scale.requires_grad):
            return q(p)  # straight-through gradients to the weight (and to scale/offset when learnt)
        # Inference: the quantized weight only changes when the weight or its encoding does. The cache
        # holds the tensors it was built from (compared by identity): addresses alone can be reused.
        key = (
            p.data_ptr(),
            p._version,
            q.scale._version,
            q.zero_point._version,
            q.enabled,
            q.spec,
            q.rounding,
        )
        sources = (p, q.scale, q.zero_point)
        cache = self.__dict__.setdefault("_lowbit_qparam_cache", {})
        hit = cache.get(name)
        if hit is not None and hit[0] == key and all(a is b for a, b in zip(hit[1], sources, strict=True)):
            return hit[2]
        with torch.no_grad():
            value = q(p)
        cache[name] = (key, sources, value)
        return value

    def quantizers(self) -> dict[str, Quantizer]:
        """This module's quantizers by role: 'input.0', 'output.0', 'param.weight'."""
        found: dict[str, Quantizer] = {}
        for i, m in enumerate(self.input_quantizers):
            if m is not None:
                found[f"input.{i}"] = cast(Quantizer, m)
        for i, m in enumerate(self.output_quantizers):
            if m is not None:
                found[f"output.{i}"] = cast(Quantizer, m)
        for name, m in self.param_quantizers.items():
            if m is not None:
                found[f"param.{name}"] = cast(Quantizer, m)
        return found

    def clear_param_cache(self) -> None:
        self.__dict__.pop("_lowbit_qparam_cache", None)


class ReluQuantizationMixin(QuantizationMixin):
    """A ReLU and its output quantizer in one pass over the activation (inference only).

    When the output grid's lowest level is ≥ 0 — the asymmetric grid calibrated on ReLU outputs has
    offset 0 — clamping to that level already maps every negative input where ReLU would (to the grid's
    lowest level), so quantizing the ReLU's *input* gives the same values as ReLU then quantize (a −0.0
    may stand for +0.0) without the ReLU's own pass and buffer. Target hardware fuses ReLU into the
    requantization the same way. Anything else (training, observing, a signed grid, input quantizers)
    takes the ordinary path.
    """

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if (
            len(args) == 1
            and not kwargs
            and not getattr(self, "inplace", False)
            and len(self.output_quantizers) == 1
        ):
            q = cast("Quantizer | None", self.output_quantizers[0])
            if q is not None and not any(m is not None and m.enabled for m in self.input_quantizers):
                fused = q.quantize_relu_input(args[0])
                if fused is not None:
                    return fused
        return super().forward(*args, **kwargs)


_QUANTIZER_HOLDERS = frozenset({"input_quantizers", "output_quantizers", "param_quantizers"})


def _set_training(module: nn.Module, mode: bool) -> None:
    cls = type(module)
    if cls.train is not nn.Module.train or cls.__setattr__ is not nn.Module.__setattr__:
        module.train(mode)
        return
    module.__dict__["training"] = mode
    for child in module._modules.values():
        if child is not None:
            _set_training(child, mode)


def _is_fresh(out: torch.Tensor, args: tuple[Any, ...]) -> bool:
    """Whether ``out`` is a new tensor of its own (not a view, not one of the inputs): safe to overwrite."""
    if out._base is not None or out.requires_grad:
        return False
    ptr = out.data_ptr()
    return not any(isinstance(a, torch.Tensor) and a.data_ptr() == ptr for a in args)


def quantized_class(cls: type[nn.Module]) -> type[nn.Module]:
    """Quantized<cls>: QuantizationMixin first in the MRO, then the original class."""
    if issubclass(cls, QuantizationMixin):
        return cls
    if cls not in _CLASS_CACHE:
        base = ReluQuantizationMixin if issubclass(cls, nn.ReLU) else QuantizationMixin
        _CLASS_CACHE[cls] = type(f"Quantized{cls.__name__}", (base, cls), {"_lowbit_original": cls})
    return _CLASS_CACHE[cls]


def quantize_module_in_place(
    module: nn.Module,
    onnx_type: str,
    inputs: list[Quantizer | None],
    outputs: list[Quantizer | None],
    params: dict[str, Quantizer | None],
) -> QuantizationMixin:
    module.__class__ = quantized_class(type(module))
    # ModuleList/ModuleDict accept None entries ("no quantizer here"); their stubs do not say so.
    nn.Module.__setattr__(module, "input_quantizers", nn.ModuleList(inputs))  # type: ignore[arg-type]
    nn.Module.__setattr__(module, "output_quantizers", nn.ModuleList(outputs))  # type: ignore[arg-type]
    nn.Module.__setattr__(module, "param_quantizers", nn.ModuleDict(params))  # type: ignore[arg-type]
    module.onnx_type = onnx_type  # type: ignore[assignment]
    return module  # type: ignore[return-value]


def unquantized_copy_class(module: nn.Module) -> type[nn.Module]:
    return getattr(type(module), "_lowbit_original", type(module))
