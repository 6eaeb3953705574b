"""One registry from leaf module class to ONNX op type.

quantsim's config (AIMET JSON) keys its ``op_type`` rules on ONNX op type names, so every leaf module that
can appear in a prepared graph must map to one. A new op is a new registration, never an edit here::

    @register_op_type("Gelu")
    class MyGelu(nn.Module): ...

    onnx_op_type(MyGelu())  # -> "Gelu"

Lookup walks the class's MRO, so subclasses of registered classes inherit their parent's op type unless
they register their own. An op type may be a function of the module instance (``AdaptiveAvgPool2d(1)`` is a
``GlobalAveragePool``; ``AdaptiveAvgPool2d(7)`` an ``AveragePool``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from core.errors import UnsupportedOpError

OpType = str | Callable[[nn.Module], str]
_REGISTRY: dict[type, OpType] = {}

M = TypeVar("M", bound=type)


def register_op_type(op_type: OpType) -> Callable[[M], M]:
    """Class decorator: record ``op_type`` (an ONNX op type name, or a function of the instance) for a class."""

    def decorate(cls: M) -> M:
        _REGISTRY[cls] = op_type
        return cls

    return decorate


def register_op_types(mapping: dict[type, OpType]) -> None:
    """Register op types for classes defined elsewhere (torch's own layers)."""
    _REGISTRY.update(mapping)


def has_op_type(module_or_class: nn.Module | type) -> bool:
    """Whether ``module_or_class`` (or a base class) is registered."""
    cls = module_or_class if isinstance(module_or_class, type) else type(module_or_class)
    return any(base in _REGISTRY for base in cls.__mro__)


def onnx_op_type(module: nn.Module) -> str:
    """The ONNX op type of a leaf module (``nn.Linear`` -> ``"Gemm"``, ``ops.Add`` -> ``"Add"``).

    Raises UnsupportedOpError for a class that neither it nor any base class registered.
    """
    for base in type(module).__mro__:
        entry = _REGISTRY.get(base)
        if entry is not None:
            return entry if isinstance(entry, str) else entry(module)
    raise UnsupportedOpError(
        f"no ONNX op type registered for module class {type(module).__qualname__}; "
        "register one with core.graph.op_types.register_op_type"
    )


def registered_classes() -> list[type]:
    """All registered classes (for tests and docs)."""
    return list(_REGISTRY)


def _adaptive_avg_pool(module: nn.Module) -> str:
    size = module.output_size  # type: ignore[attr-defined]
    sizes = size if isinstance(size, tuple | list) else (size,)
    return "GlobalAveragePool" if all(s == 1 for s in sizes) else "AveragePool"


def _adaptive_max_pool(module: nn.Module) -> str:
    size = module.output_size  # type: ignore[attr-defined]
    sizes = size if isinstance(size, tuple | list) else (size,)
    return "GlobalMaxPool" if all(s == 1 for s in sizes) else "MaxPool"


register_op_types(
    {
        nn.Conv1d: "Conv",
        nn.Conv2d: "Conv",
        nn.Conv3d: "Conv",
        nn.ConvTranspose1d: "ConvTranspose",
        nn.ConvTranspose2d: "ConvTranspose",
        nn.ConvTranspose3d: "ConvTranspose",
        nn.Linear: "Gemm",
        nn.BatchNorm1d: "BatchNormalization",
        nn.BatchNorm2d: "BatchNormalization",
        nn.BatchNorm3d: "BatchNormalization",
        nn.LayerNorm: "LayerNormalization",
        nn.GroupNorm: "GroupNormalization",
        nn.InstanceNorm1d: "InstanceNormalization",
        nn.InstanceNorm2d: "InstanceNormalization",
        nn.Embedding: "Gather",
        nn.ReLU: "Relu",
        nn.ReLU6: "Clip",
        nn.Hardtanh: "Clip",
        nn.GELU: "Gelu",
        nn.SiLU: "Silu",
        nn.Sigmoid: "Sigmoid",
        nn.Tanh: "Tanh",
        nn.Hardswish: "HardSwish",
        nn.Hardsigmoid: "HardSigmoid",
        nn.LeakyReLU: "LeakyRelu",
        nn.PReLU: "PRelu",
        nn.ELU: "Elu",
        nn.Mish: "Mish",
        nn.Softplus: "Softplus",
        nn.Softmax: "Softmax",
        nn.LogSoftmax: "LogSoftmax",
        nn.MaxPool1d: "MaxPool",
        nn.MaxPool2d: "MaxPool",
        nn.MaxPool3d: "MaxPool",
        nn.AvgPool1d: "AveragePool",
        nn.AvgPool2d: "AveragePool",
        nn.AvgPool3d: "AveragePool",
        nn.AdaptiveAvgPool1d: _adaptive_avg_pool,
        nn.AdaptiveAvgPool2d: _adaptive_avg_pool,
        nn.AdaptiveAvgPool3d: _adaptive_avg_pool,
        nn.AdaptiveMaxPool1d: _adaptive_max_pool,
        nn.AdaptiveMaxPool2d: _adaptive_max_pool,
        nn.Upsample: "Resize",
        nn.UpsamplingNearest2d: "Resize",
        nn.UpsamplingBilinear2d: "Resize",
        nn.PixelShuffle: "DepthToSpace",
    }
)
