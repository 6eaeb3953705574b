"""Activations the ONNX export writes as a chain of nodes, rounded node by node where the target does.

lowbit exports at opset 17 (core/export/onnx_export.py), where ONNX has no GELU, SiLU or Mish: the
exporter writes ``x / √2 → Erf → + 1 → x · → · 0.5`` (and similar chains, :data:`CHAINS`; ONNX
has no Rsqrt at all, so ``torch.rsqrt`` is ``1 / Sqrt(x)``: T5's RMSNorm in a .pt2, 28.9 dB as one op). A target
that quantizes every ONNX node output — AIMET's placement, which aimet-onnx's QuantizationSimModel
and a QNN graph built from its encodings follow — rounds each intermediate of the chain to its own
8-bit grid, and each scalar constant to the encoding of its own value. The encodings it rounds on are
the ones lowbit writes for those tensors (core/export/decomposed_ops.py): the min-max of the values
the chain takes on its input's grid (core/quant/grid_chain.py), or the range the config fixes for
the node's op type (HTP's Sigmoid/Tanh). Simulating the activation as one op instead costs ViT
26.6 dB of agreement with aimet-onnx (tests/core/aimet/test_strict_corpus.py).

When the config's ``target.decomposed_ops`` is ``"per_node"`` (core/quantsim/target.py), QuantSim
gives each such module a :class:`PerNodeRounding`: while the module's input grid and output quantizer
are both active, its forward runs the chain with those roundings; otherwise (calibration, a disabled
quantizer upstream or at the output) the module's own forward runs, in float, as before. The
intermediate encodings follow the input grid (recomputed whenever its encoding changes), so
``compute_encodings``, ``load_encodings`` and QAT need no extra step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import fx, nn

from core.graph import ops
from core.quant.encoding import QuantSpec
from core.quant.grid_chain import (
    ELEMENTWISE_OPS,
    constant_encoding,
    encoding_over,
    fixed_encoding,
    grid_values,
)
from core.quant.quantizer import Quantizer

if TYPE_CHECKING:
    from core.quantsim.sim import QuantSim


@dataclass(frozen=True)
class ChainNode:
    """One ONNX node of a chain: ``name = op(*args)``; an arg is ``"x"``, an earlier node's name, or a
    float32 scalar constant."""

    name: str
    op: str
    args: tuple[str | float, ...]


def _f32(value: float) -> float:
    return float(np.float32(value))


# What torch.onnx (TorchScript exporter, opset 17) writes for each module, node for node: the
# operand order and the float32 constants are the exporter's (tests/core/quantsim/test_decomposed.py
# compares them with an export). The last node's output is the module's output.
CHAINS: dict[str, tuple[ChainNode, ...]] = {
    "gelu": (
        ChainNode("div", "Div", ("x", _f32(math.sqrt(2.0)))),
        ChainNode("erf", "Erf", ("div",)),
        ChainNode("add", "Add", ("erf", 1.0)),
        ChainNode("mul", "Mul", ("x", "add")),
        ChainNode("out", "Mul", ("mul", 0.5)),
    ),
    "gelu_tanh": (
        ChainNode("square", "Mul", ("x", "x")),
        ChainNode("cube", "Mul", ("x", "square")),
        ChainNode("scaled_cube", "Mul", (_f32(0.044715), "cube")),
        ChainNode("inner", "Add", ("x", "scaled_cube")),
        ChainNode("scaled_inner", "Mul", (_f32(math.sqrt(2.0 / math.pi)), "inner")),
        ChainNode("tanh", "Tanh", ("scaled_inner",)),
        ChainNode("add", "Add", (1.0, "tanh")),
        ChainNode("mul", "Mul", ("x", "add")),
        ChainNode("out", "Mul", (0.5, "mul")),
    ),
    "silu": (
        ChainNode("sigmoid", "Sigmoid", ("x",)),
        ChainNode("out", "Mul", ("x", "sigmoid")),
    ),
    "mish": (
        ChainNode("softplus", "Softplus", ("x",)),
        ChainNode("tanh", "Tanh", ("softplus",)),
        ChainNode("out", "Mul", ("x", "tanh")),
    ),
    # torch.rsqrt (T5's RMSNorm in a .pt2): the exporter writes 1 / Sqrt(x).
    "rsqrt": (
        ChainNode("sqrt", "Sqrt", ("x",)),
        ChainNode("out", "Div", (1.0, "sqrt")),
    ),
}


def chain_of(module: nn.Module) -> tuple[ChainNode, ...] | None:
    """The chain the export writes for ``module``, or None when it is one ONNX op."""
    if isinstance(module, nn.GELU):
        return CHAINS["gelu_tanh" if module.approximate == "tanh" else "gelu"]
    if isinstance(module, nn.SiLU):
        return CHAINS["silu"]
    if isinstance(module, nn.Mish):
        return CHAINS["mish"]
    if isinstance(module, ops.Rsqrt):
        return CHAINS["rsqrt"]
    return None


def chain_values(chain: tuple[ChainNode, ...], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every node's output when the chain runs, in float32, on ``x``."""
    values = {"x": x}
    for node in chain:
        args = [values[a] if isinstance(a, str) else torch.tensor(a, dtype=torch.float32) for a in node.args]
        values[node.name] = ELEMENTWISE_OPS[node.op](*args)
    return values


def chain_encodings(
    chain: tuple[ChainNode, ...],
    grid: np.ndarray,
    bitwidth: int,
    fixed_ranges: Mapping[str, tuple[float, float]],
) -> list[Any]:
    """The encoding of every node but the last, from the values the chain takes on ``grid`` (as the
    exporter computes them: core/export/decomposed_ops.py)."""
    values = chain_values(chain, torch.from_numpy(grid))
    encodings = []
    for node in chain[:-1]:
        fixed = fixed_ranges.get(node.op)
        encodings.append(
            fixed_encoding(*fixed, bitwidth=bitwidth)
            if fixed is not None
            else encoding_over(values[node.name], bitwidth)
        )
    return encodings


def _calibrated(q: Any) -> Quantizer | None:
    """The quantizer behind ``q`` (a refinement pass wraps it) when it quantizes on an integer grid now."""
    inner = getattr(q, "inner", q)
    if not isinstance(inner, Quantizer) or not q.enabled or inner._observing or inner.spec.dtype != "int":
        return None
    return inner if inner.scale.numel() > 0 else None


class PerNodeRounding:
    """Runs ``chain`` with every intermediate and constant rounded (see the module docstring).

    ``source`` holds the quantizer that puts the module's input on its grid: ``(module, role)``, the
    module's own input quantizer (``"input"``) or its producer's output quantizer (``"output"``),
    looked up at each call so a quantizer swapped in later (range learning) is the one read.
    """

    def __init__(
        self,
        chain: tuple[ChainNode, ...],
        source: tuple[nn.Module, str],
        bitwidth: int,
        fixed_ranges: Mapping[str, tuple[float, float]],
    ) -> None:
        self.chain = chain
        self.source = source
        self.bitwidth = bitwidth
        self.fixed_ranges = dict(fixed_ranges)
        self._key: tuple[Any, ...] | None = None
        self._held: tuple[torch.Tensor, ...] = ()
        self._quantizers: list[Quantizer] = []
        self._constants: dict[tuple[float, torch.device, torch.dtype, str], torch.Tensor] = {}

    def input_quantizer(self) -> Quantizer | None:
        module, role = self.source
        held = getattr(module, f"{role}_quantizers", None)
        return _calibrated(held[0]) if held is not None and len(held) and held[0] is not None else None

    def __call__(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """The module's output before its output quantizer, or None when the chain runs in float."""
        outputs = cast("nn.ModuleList", module.output_quantizers)
        if not len(outputs) or outputs[0] is None or _calibrated(outputs[0]) is None:
            return None
        src = self.input_quantizer()
        if (
            self.bitwidth > 16
            or src is None
            or src.spec.granularity != "per_tensor"
            or src.spec.bitwidth > 16
        ):
            return None
        quantizers = self._intermediates(src, x.device)
        values: dict[str, torch.Tensor] = {"x": x}
        for node, q in zip(self.chain, [*quantizers, None], strict=True):
            args = [
                values[a] if isinstance(a, str) else self._constant(a, x, src.rounding) for a in node.args
            ]
            out = ELEMENTWISE_OPS[node.op](*args)
            values[node.name] = q(out) if q is not None else out
        return values[self.chain[-1].name]

    def _intermediates(self, src: Quantizer, device: torch.device) -> list[Quantizer]:
        key = (src.scale._version, src.zero_point._version, src.spec, src.rounding, device)
        if (
            self._key == key
            and len(self._held) == 2
            and self._held[0] is src.scale
            and self._held[1] is src.zero_point
        ):
            return self._quantizers
        enc = src.encoding
        assert enc is not None
        grid = grid_values(float(enc.scale.reshape(-1)[0]), float(enc.offset.reshape(-1)[0]), enc.bitwidth)
        quantizers = []
        for encoding in chain_encodings(self.chain, grid, self.bitwidth, self.fixed_ranges):
            q = Quantizer(QuantSpec(bitwidth=self.bitwidth))
            q.set_encoding(encoding)
            q.rounding = src.rounding  # the target rounds inside the chain as it does everywhere
            quantizers.append(q.to(device))
        self._key, self._held, self._quantizers = key, (src.scale, src.zero_point), quantizers
        return quantizers

    def _constant(self, value: float, x: torch.Tensor, rounding: str) -> torch.Tensor:
        """The scalar as the target holds it: on the grid of its own encoding."""
        key = (value, x.device, x.dtype, rounding)
        held = self._constants.get(key)
        if held is None:
            q = Quantizer(QuantSpec(bitwidth=self.bitwidth))
            q.set_encoding(constant_encoding(value, self.bitwidth))
            q.rounding = rounding
            held = q(torch.tensor(value, dtype=torch.float32)).to(x.device, x.dtype)
            self._constants[key] = held
        return held


def fixed_output_ranges(sim: QuantSim) -> dict[str, tuple[float, float]]:
    """Op type → (min, max) for the chain ops whose output range the config fixes (both ends)."""
    ops = {node.op for chain in CHAINS.values() for node in chain}
    found = {}
    for op in sorted(ops):
        constraint = sim.config.op_rule(op).encoding_constraints
        if constraint is not None and constraint[1] is not None:
            found[op] = (constraint[0], constraint[1])
    return found


def attach_per_node_rounding(sim: QuantSim) -> int:
    """Give every quantized module the export decomposes its :class:`PerNodeRounding`; the count."""
    from core.quantsim.placement import _true_producer

    fixed = fixed_output_ranges(sim)
    attached = 0
    for node in sim.model.graph.nodes:
        if node.op != "call_module" or str(node.target) not in sim.plans:
            continue
        module = sim.model.get_submodule(str(node.target))
        chain = chain_of(module)
        if chain is None or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        own = getattr(module, "input_quantizers", None)
        source: tuple[nn.Module, str] | None = None
        if own is not None and len(own) and own[0] is not None:
            source = (module, "input")
        else:
            producer = _true_producer(node.args[0], sim.model)
            if producer.op == "call_module" and len(
                getattr(sim.model.get_submodule(str(producer.target)), "output_quantizers", ())
            ):
                source = (sim.model.get_submodule(str(producer.target)), "output")
        if source is None:
            continue
        module.__dict__["_lowbit_per_node"] = PerNodeRounding(chain, source, sim.params.output_bw, fixed)
        attached += 1
    return attached
