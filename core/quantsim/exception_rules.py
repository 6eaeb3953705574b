"""AIMET's exception rules: settings aimet-onnx's QuantizationSimModel imposes after reading a config.

aimet-onnx 2.42 adjusts two kinds of quantizer after applying the config file
(``QuantizationSimModel._apply_param_symmetry_to_inputs`` and ``_apply_exception_rules``), whatever
the file says. A plan that ignored them would simulate a different grid than the target toolchain
and write encodings its strict loader rejects:

* the second input of a MatMul whose "weight" is an activation (attention's Q·Kᵀ and P·V) is
  quantized with the *weight* symmetry of the config (op_type.MatMul.params.weight, else the
  params defaults): the kernel takes that operand as a weight;
* normalization parameters are at least 8 bits; LayerNorm/BatchNorm parameters are symmetric only
  at 16 bits and more (HTP's 8-bit LayerNorm kernel takes an asymmetric scale); GroupNorm,
  InstanceNorm and RMSNorm parameters take their output's symmetry and width.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import fx

from core.quant.encoding import QuantSpec

if TYPE_CHECKING:
    from core.quantsim.config import QuantSimConfig
    from core.quantsim.placement import ModulePlan

Producer = Callable[[fx.Node, fx.GraphModule], fx.Node]
_NORM_OUTPUT_TIED = frozenset({"GroupNormalization", "InstanceNormalization", "RMSNormalization"})
_NORM_ASYMMETRIC_BELOW_16 = frozenset({"LayerNormalization", "BatchNormalization"})


def apply_exception_rules(
    gm: fx.GraphModule,
    plans: dict[str, ModulePlan],
    config: QuantSimConfig,
    true_producer: Producer,  # placement's walk back through value-preserving ops
) -> None:
    """Adjust ``plans`` in place as aimet-onnx does after its config (see the module docstring)."""
    modules = dict(gm.named_modules())
    for plan in plans.values():
        if plan.op_type in _NORM_OUTPUT_TIED | _NORM_ASYMMETRIC_BELOW_16:
            _norm_params(plan)
    weight_symmetric = bool(config.param_rule("MatMul", "weight").is_symmetric)
    for n in gm.graph.nodes:
        matmul = plans.get(str(n.target)) if n.op == "call_module" else None
        if matmul is None or matmul.op_type != "MatMul" or len(n.args) < 2:
            continue
        if any(True for _ in modules[str(n.target)].parameters(recurse=False)):
            continue  # a constant weight: a parameter quantizer, set by the config already
        _set_effective_symmetry(n, 1, matmul, plans, weight_symmetric, true_producer, gm)


def _norm_params(plan: ModulePlan) -> None:
    for pname, spec in plan.params.items():
        if spec is None or spec.dtype != "int":
            continue
        bitwidth = max(spec.bitwidth, 8)
        if plan.op_type in _NORM_OUTPUT_TIED:
            out = plan.output
            symmetric = bool(out is not None and out.symmetric)
            bitwidth = out.bitwidth if out is not None else bitwidth
        else:
            symmetric = bitwidth >= 16
        plan.params[pname] = dataclasses.replace(spec, bitwidth=bitwidth, symmetric=symmetric)


def _set_effective_symmetry(
    node: fx.Node,
    index: int,
    plan: ModulePlan,
    plans: dict[str, ModulePlan],
    symmetric: bool,
    true_producer: Producer,
    gm: fx.GraphModule,
) -> None:
    """Set the symmetry of the quantizer whose grid the input ``index`` of ``node`` is on."""
    spec = plan.inputs[index]
    if spec is not None:
        plan.inputs[index] = _with_symmetry(spec, symmetric)
        return
    arg = node.args[index]
    if not isinstance(arg, fx.Node):
        return
    source = true_producer(arg, gm)
    producer = plans.get(str(source.target)) if source.op == "call_module" else None
    if producer is not None and producer.output is not None:
        producer.output = _with_symmetry(producer.output, symmetric)
        producer.reasons["output"] = f"second input of dynamic MatMul {plan.name}: weight symmetry"


def _with_symmetry(spec: QuantSpec, symmetric: bool) -> QuantSpec:
    return spec if spec.dtype != "int" else dataclasses.replace(spec, symmetric=symmetric)
