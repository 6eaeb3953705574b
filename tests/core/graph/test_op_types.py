"""op_types registry and ops modules: every op module has an ONNX type and computes its torch function."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UnsupportedOpError
from core.graph import ops
from core.graph.op_types import onnx_op_type, register_op_type


def test_every_ops_module_is_registered() -> None:
    classes = [
        c
        for _, c in inspect.getmembers(ops, inspect.isclass)
        if issubclass(c, nn.Module) and c.__module__ == ops.__name__
    ]
    assert len(classes) >= 25
    for cls in classes:
        args = {"normalized_shape": (4,)} if cls is ops.LayerNormFn else {}
        assert onnx_op_type(cls(**args))


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (nn.Conv2d(1, 1, 1), "Conv"),
        (nn.ConvTranspose2d(1, 1, 1), "ConvTranspose"),
        (nn.Linear(1, 1), "Gemm"),
        (nn.BatchNorm2d(1), "BatchNormalization"),
        (nn.ReLU6(), "Clip"),
        (nn.Embedding(2, 2), "Gather"),
        (nn.AdaptiveAvgPool2d(1), "GlobalAveragePool"),
        (nn.AdaptiveAvgPool2d((2, 2)), "AveragePool"),
        (nn.Upsample(scale_factor=2), "Resize"),
        (ops.MatMul(), "MatMul"),
        (ops.Cat(1), "Concat"),
        (ops.Mean((2, 3), True), "ReduceMean"),
    ],
)
def test_known_mappings(module: nn.Module, expected: str) -> None:
    assert onnx_op_type(module) == expected


def test_subclasses_inherit_and_new_classes_register_themselves() -> None:
    class MyConv(nn.Conv2d):
        pass

    @register_op_type("Gelu")
    class MyGelu(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.gelu(x)

    assert onnx_op_type(MyConv(1, 1, 1)) == "Conv"
    assert onnx_op_type(MyGelu()) == "Gelu"


def test_unknown_module_names_the_class_and_the_fix() -> None:
    class Custom(nn.Module):
        pass

    with pytest.raises(UnsupportedOpError, match=r"Custom.*register_op_type"):
        onnx_op_type(Custom())


def test_ops_compute_what_torch_computes() -> None:
    x, y = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    a, b = torch.randn(2, 3, 4), torch.randn(2, 4, 5)
    assert torch.equal(ops.Add()(x, y), x + y)
    assert torch.equal(ops.Sub()(1.0, x), 1.0 - x)
    assert torch.equal(ops.Div("floor")(x, y), torch.div(x, y, rounding_mode="floor"))
    assert torch.equal(ops.BMM()(a, b), torch.bmm(a, b))
    assert torch.equal(ops.Cat(1)(x, y), torch.cat([x, y], 1))
    assert torch.equal(ops.Mean((2, 3), True)(x), x.mean((2, 3), keepdim=True))
    assert torch.equal(ops.Sum(None)(x), x.sum())
    assert torch.equal(
        ops.Interpolate(scale_factor=2.0, mode="bilinear")(x),
        F.interpolate(x, scale_factor=2.0, mode="bilinear"),
    )
    assert torch.equal(ops.MaskedFill()(x, x > 0, -1.0), x.masked_fill(x > 0, -1.0))
    assert torch.equal(ops.Rsqrt()(x.abs() + 1), torch.rsqrt(x.abs() + 1))
