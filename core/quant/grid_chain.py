"""Elementwise ops evaluated on every value of an input grid: encodings for the nodes of a chain.

An activation ONNX has no op for (GELU below opset 20, SiLU) is written as a chain of elementwise
nodes whose only tensor input is the activation's input ``x``. With ``x`` on a b-bit grid, each
node's output can take at most 2^b values, computed here by running the chain on the grid itself;
the encoding of a node spans exactly that set (min-max over it, as a calibration of the tensor
would at best observe). The exporter writes these encodings for aimet-onnx
(core/export/decomposed_ops.py), and the simulation rounds on the same ones where the target does
(core/quantsim/decomposed.py): both compute them here, so they are equal bit for bit.

>>> grid = grid_values(scale=0.5, offset=-2.0, bitwidth=2)
>>> grid.tolist()
[-1.0, -0.5, 0.0, 0.5]
>>> enc = encoding_over(ELEMENTWISE_OPS["Mul"](torch.from_numpy(grid), torch.tensor(2.0)), bitwidth=8)
>>> float(enc.min), float(enc.max)
(-2.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core.quant.encoding import Encoding, QuantSpec

# ONNX elementwise ops as torch computes them in float32 (ONNX Softplus is log(exp(x) + 1), which
# F.softplus equals to float32 precision: above its threshold of 20 the two differ by < 1e-8).
ELEMENTWISE_OPS: dict[str, Callable[..., torch.Tensor]] = {
    "Div": torch.div,
    "Mul": torch.mul,
    "Add": torch.add,
    "Sub": torch.sub,
    "Erf": torch.special.erf,
    "Tanh": torch.tanh,
    "Sigmoid": torch.sigmoid,
    "Softplus": F.softplus,
    "Pow": torch.pow,
    "Sqrt": torch.sqrt,
}


def grid_values(scale: float, offset: float, bitwidth: int) -> np.ndarray:
    """Every value a per-tensor integer encoding represents, ``(q + offset) · scale``, as float32."""
    q = np.arange(2**bitwidth, dtype=np.float64)
    return ((q + float(offset)) * float(scale)).astype(np.float32)


def encoding_over(values: torch.Tensor, bitwidth: int) -> Encoding:
    """The asymmetric b-bit encoding spanning ``values`` (min-max, zero included)."""
    return Encoding.from_min_max(
        values.min(), values.max(), bitwidth=bitwidth, symmetric=False, spec=QuantSpec(bitwidth=bitwidth)
    )


def fixed_encoding(lo: float, hi: float, bitwidth: int) -> Encoding:
    """The encoding of a config's fixed range (AIMET's ``encoding_constraints``, e.g. Sigmoid [0, 1]);
    a range centred on 0 (HTP's Tanh [-1, 1]) is symmetric, as aimet-onnx makes that quantizer."""
    symmetric = math.isclose(lo, -hi, rel_tol=1e-5, abs_tol=1e-8)
    return Encoding.from_min_max(
        torch.tensor([lo]),
        torch.tensor([hi]),
        bitwidth=bitwidth,
        symmetric=symmetric,
        spec=QuantSpec(bitwidth=bitwidth, symmetric=symmetric),
    )


def constant_encoding(value: float, bitwidth: int) -> Encoding:
    """A scalar constant's own encoding: the grid spans [min(v, 0), max(v, 0)], so ``v`` is an end of it
    and is represented to the float32 rounding of ``scale · 2^b``."""
    v = torch.tensor([float(value)])
    return Encoding.from_min_max(v, v, bitwidth=bitwidth, symmetric=False, spec=QuantSpec(bitwidth=bitwidth))
