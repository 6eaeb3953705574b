"""Small modules for functional and tensor-method math, so each call site is a leaf module with quantizers.

``prepare_model`` turns ``x + y``, ``torch.matmul``, ``F.softmax``, ... into calls of these modules. Each one
registers its ONNX op type, which quantsim's config keys on. Forward bodies are one torch call: a prepared
graph adds no Python work beyond the module call itself.

Tensor arguments are positional ``forward`` arguments (they get input quantizers); non-tensor settings
(dims, eps, modes) are constructor arguments. Python scalars may also reach ``forward`` (``x * 0.5``);
quantizers apply only to ``torch.Tensor`` arguments.

Example::

    add = Add()
    add(torch.ones(2), torch.ones(2))  # tensor([2., 2.])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.graph.op_types import register_op_type


@register_op_type("Add")
class Add(nn.Module):
    """``x + y`` (either may be a scalar)."""

    def forward(self, x: Any, y: Any) -> Tensor:
        return x + y


@register_op_type("Sub")
class Sub(nn.Module):
    """``x - y`` (either may be a scalar, so ``1.0 - mask`` is ``Sub()(1.0, mask)``)."""

    def forward(self, x: Any, y: Any) -> Tensor:
        return x - y


@register_op_type("Mul")
class Mul(nn.Module):
    """``x * y``."""

    def forward(self, x: Any, y: Any) -> Tensor:
        return x * y


@register_op_type("Div")
class Div(nn.Module):
    """``x / y``, or floor/trunc division with ``rounding_mode``."""

    def __init__(self, rounding_mode: str | None = None) -> None:
        super().__init__()
        self.rounding_mode = rounding_mode

    def forward(self, x: Any, y: Any) -> Tensor:
        if self.rounding_mode is None:
            return x / y
        return torch.div(x, y, rounding_mode=self.rounding_mode)


@register_op_type("MatMul")
class MatMul(nn.Module):
    """``torch.matmul(x, y)``."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.matmul(x, y)


@register_op_type("MatMul")
class BMM(nn.Module):
    """``torch.bmm(x, y)`` (ONNX has no batched-only op; it exports as MatMul)."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.bmm(x, y)


@register_op_type("Gemm")
class Addmm(nn.Module):
    """``beta * bias + alpha * (x @ y)``."""

    def __init__(self, beta: float = 1.0, alpha: float = 1.0) -> None:
        super().__init__()
        self.beta, self.alpha = beta, alpha

    def forward(self, bias: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return torch.addmm(bias, x, y, beta=self.beta, alpha=self.alpha)


@register_op_type("MatMul")
class Baddbmm(nn.Module):
    """``beta * bias + alpha * bmm(x, y)`` (exports as MatMul followed by Add)."""

    def __init__(self, beta: float = 1.0, alpha: float = 1.0) -> None:
        super().__init__()
        self.beta, self.alpha = beta, alpha

    def forward(self, bias: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return torch.baddbmm(bias, x, y, beta=self.beta, alpha=self.alpha)


@register_op_type("Concat")
class Cat(nn.Module):
    """``torch.cat(tensors, dim)``; the tensors are separate forward arguments so each can be quantized."""

    def __init__(self, dim: int = 0) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *tensors: Tensor) -> Tensor:
        return torch.cat(tensors, self.dim)


@register_op_type("Softmax")
class Softmax(nn.Module):
    """``torch.softmax(x, dim)``."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(x, self.dim)


@register_op_type("LogSoftmax")
class LogSoftmax(nn.Module):
    """``torch.log_softmax(x, dim)``."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return torch.log_softmax(x, self.dim)


def _dims(dims: int | Sequence[int] | None) -> list[int] | None:
    if dims is None:
        return None
    return [dims] if isinstance(dims, int) else list(dims)


@register_op_type("ReduceMean")
class Mean(nn.Module):
    """``x.mean(dims, keepdim)``; ``dims=None`` reduces everything."""

    def __init__(self, dims: int | Sequence[int] | None = None, keepdim: bool = False) -> None:
        super().__init__()
        self.dims, self.keepdim = _dims(dims), keepdim

    def forward(self, x: Tensor) -> Tensor:
        if self.dims is None:
            return x.mean()
        return x.mean(self.dims, keepdim=self.keepdim)


@register_op_type("ReduceSum")
class Sum(nn.Module):
    """``x.sum(dims, keepdim)``; ``dims=None`` reduces everything."""

    def __init__(self, dims: int | Sequence[int] | None = None, keepdim: bool = False) -> None:
        super().__init__()
        self.dims, self.keepdim = _dims(dims), keepdim

    def forward(self, x: Tensor) -> Tensor:
        if self.dims is None:
            return x.sum()
        return x.sum(self.dims, keepdim=self.keepdim)


def _vector_norm_type(module: nn.Module) -> str:
    order = float(module.ord)  # type: ignore[arg-type]
    if order == 1.0:
        return "ReduceL1"
    return "ReduceL2" if order == 2.0 else "ReduceMax"


@register_op_type(_vector_norm_type)
class VectorNorm(nn.Module):
    """``torch.linalg.vector_norm(x, ord, dims, keepdim)`` (F.normalize's denominator)."""

    def __init__(
        self, ord: float = 2.0, dims: int | Sequence[int] | None = None, keepdim: bool = False
    ) -> None:
        super().__init__()
        self.ord, self.dims, self.keepdim = ord, _dims(dims), keepdim

    def forward(self, x: Tensor) -> Tensor:
        return torch.linalg.vector_norm(x, self.ord, self.dims, keepdim=self.keepdim)


@register_op_type("Resize")
class Interpolate(nn.Module):
    """``F.interpolate`` with fixed settings (``size`` or ``scale_factor``, ``mode``, ``align_corners``)."""

    def __init__(
        self,
        size: int | Sequence[int] | None = None,
        scale_factor: float | Sequence[float] | None = None,
        mode: str = "nearest",
        align_corners: bool | None = None,
    ) -> None:
        super().__init__()
        self.size = None if size is None else (size if isinstance(size, int) else tuple(size))
        self.scale_factor = (
            None
            if scale_factor is None
            else (scale_factor if isinstance(scale_factor, float | int) else tuple(scale_factor))
        )
        self.mode, self.align_corners = mode, align_corners

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(
            x,
            size=self.size,  # type: ignore[arg-type]
            scale_factor=self.scale_factor,  # type: ignore[arg-type]
            mode=self.mode,
            align_corners=self.align_corners,
        )


@register_op_type("LayerNormalization")
class LayerNormFn(nn.Module):
    """``F.layer_norm`` whose weight/bias are computed tensors (or absent), passed to forward."""

    def __init__(self, normalized_shape: Sequence[int], eps: float = 1e-5) -> None:
        super().__init__()
        self.normalized_shape, self.eps = tuple(normalized_shape), eps

    def forward(self, x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


@register_op_type("Pow")
class Pow(nn.Module):
    """``x ** y``."""

    def forward(self, x: Any, y: Any) -> Tensor:
        return torch.pow(x, y)


@register_op_type("Clip")
class Clamp(nn.Module):
    """``x.clamp(min, max)`` with fixed bounds."""

    def __init__(self, min: float | None = None, max: float | None = None) -> None:
        super().__init__()
        self.min, self.max = min, max

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(x, self.min, self.max)


@register_op_type("Max")
class Maximum(nn.Module):
    """Elementwise ``torch.maximum(x, y)``."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.maximum(x, y)


@register_op_type("Min")
class Minimum(nn.Module):
    """Elementwise ``torch.minimum(x, y)``."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.minimum(x, y)


@register_op_type("Where")
class Where(nn.Module):
    """``torch.where(condition, x, y)``."""

    def forward(self, condition: Tensor, x: Any, y: Any) -> Tensor:
        return torch.where(condition, x, y)


@register_op_type("Where")
class MaskedFill(nn.Module):
    """``x.masked_fill(mask, value)`` (exports as Where)."""

    def forward(self, x: Tensor, mask: Tensor, value: Any) -> Tensor:
        return x.masked_fill(mask, value)


@register_op_type("Attention")
class ScaledDotProductAttention(nn.Module):
    """``F.scaled_dot_product_attention`` as one fused op (one output quantizer, none inside)."""

    def __init__(self, dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None) -> None:
        super().__init__()
        self.dropout_p, self.is_causal, self.scale = dropout_p, is_causal, scale

    def forward(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout_p, is_causal=self.is_causal, scale=self.scale
        )


def _unary(name: str, onnx: str, fn: Any, doc: str) -> type[nn.Module]:
    def forward(self: nn.Module, x: Tensor) -> Tensor:
        return fn(x)

    cls = type(name, (nn.Module,), {"forward": forward, "__doc__": doc, "__module__": __name__})
    return register_op_type(onnx)(cls)


Sqrt = _unary("Sqrt", "Sqrt", torch.sqrt, "``torch.sqrt(x)``.")
Rsqrt = _unary("Rsqrt", "Rsqrt", torch.rsqrt, "``torch.rsqrt(x)`` (exports as Sqrt then Reciprocal).")
Exp = _unary("Exp", "Exp", torch.exp, "``torch.exp(x)``.")
Log = _unary("Log", "Log", torch.log, "``torch.log(x)``.")
Erf = _unary("Erf", "Erf", torch.erf, "``torch.erf(x)``.")
Neg = _unary("Neg", "Neg", torch.neg, "``-x``.")
Abs = _unary("Abs", "Abs", torch.abs, "``torch.abs(x)``.")
Reciprocal = _unary("Reciprocal", "Reciprocal", torch.reciprocal, "``1 / x``.")
Square = _unary("Square", "Mul", torch.square, "``x * x``.")
Sin = _unary("Sin", "Sin", torch.sin, "``torch.sin(x)``.")
Cos = _unary("Cos", "Cos", torch.cos, "``torch.cos(x)``.")
