"""Where quantizers go: a plan per module of a prepared graph, from a QuantSimConfig.

Rules, in AIMET's order (defaults → params → op_type → supergroups → model_input →
model_output), then lowbit's per-layer overrides:

* every quantizable leaf module gets an output quantizer unless its op type says otherwise;
* supergroups (linear chains such as Conv→Relu, Add→Relu) have no quantizer inside; a foldable
  BatchNorm after Conv/ConvTranspose/Gemm is part of the chain (it folds into the layer on target);
* an input gets a quantizer when the tensor reaching it is not already quantized: a model input
  (if ``model_input`` says so), a constant, or the output of an op left in float. Value-preserving
  ops (reshape, transpose, dropout, max-pool, ...) are looked through: they neither need nor
  break a quantizer;
* parameters follow op_type.params > params > defaults.params; weights of Conv/ConvTranspose/Gemm
  may be per-channel (axis 0; axis 1 for ConvTranspose).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import fx, nn

from core.graph.fx_functions import FUNCTION_OP_TYPES
from core.graph.op_types import has_op_type, onnx_op_type
from core.quant.encoding import QuantSpec
from core.quantsim.config import Override, QuantSimConfig
from core.quantsim.data_movement import NOT_QUANTIZED_MODULES, is_data_movement
from core.quantsim.exception_rules import apply_exception_rules
from core.quantsim.supergroups import (
    FOLDABLE_INTO,
    excluded_from_supergroups,
    exported_op_types,
    supergroup_chains,
)
from core.quantsim.ties import tie_concat_inputs, tie_forward_outputs

_PER_CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0}
_FOLDABLE_INTO = FOLDABLE_INTO


def weight_channel_axis(op: str) -> int | None:
    """The output-channel axis of ``op``'s weight (Conv/Gemm 0, ConvTranspose 1), None for other ops."""
    return _PER_CHANNEL_AXIS.get(op)


@dataclass(frozen=True)
class QuantParams:
    """The run's bitwidths and schemes (from the CLI/API), applied before per-layer overrides."""

    param_bw: int = 8
    output_bw: int = 8
    param_scheme: str = "min_max"
    act_scheme: str = "min_max"
    per_channel: bool | None = None  # None: the config decides
    act_dtype: str = "int"
    param_dtype: str = "int"
    block_size: int | None = None


@dataclass
class ModulePlan:
    """Quantizers for one module: None means "no quantizer here"."""

    name: str
    op_type: str
    inputs: list[QuantSpec | None]
    output: QuantSpec | None
    params: dict[str, QuantSpec | None]
    param_scheme: str
    act_scheme: str
    output_constraint: tuple[float, float | None] | None = None
    reasons: dict[str, str] = field(default_factory=dict)
    # Other quantizers ("<module>.output.0", "<module>.input.<i>") that are this module's output
    # quantizer, one object (core/quantsim/ties.py).
    shares: list[str] = field(default_factory=list)


def is_quantizable(module: nn.Module) -> bool:
    return has_op_type(module) and not isinstance(module, NOT_QUANTIZED_MODULES)


def plan_quantizers(gm: fx.GraphModule, config: QuantSimConfig, params: QuantParams) -> dict[str, ModulePlan]:
    """Decide every quantizer of a prepared graph. Pure: the graph is not modified."""
    modules = dict(gm.named_modules())
    nodes = {n.name: n for n in gm.graph.nodes}
    qnodes = [n for n in gm.graph.nodes if n.op == "call_module" and is_quantizable(modules[str(n.target)])]
    op_types = {str(n.target): onnx_op_type(modules[str(n.target)]) for n in qnodes}
    plans: dict[str, ModulePlan] = {}
    # 1. defaults, params and op_type rules.
    for n in qnodes:
        name = str(n.target)
        op = op_types[name]
        rule = config.op_rule(op)
        act = QuantSpec(
            bitwidth=params.output_bw,
            symmetric=bool(rule.is_symmetric),
            dtype=_dtype(params.act_dtype, params.output_bw),
        )
        centred = _centred_range(rule.encoding_constraints) and act.dtype == "int"
        output = dataclasses.replace(act, symmetric=True) if centred else act
        plan = ModulePlan(
            name=name,
            op_type=op,
            inputs=[None] * len(n.args),
            output=output if rule.is_output_quantized else None,
            params={},
            param_scheme=params.param_scheme,
            act_scheme=params.act_scheme,
            output_constraint=rule.encoding_constraints,
        )
        for pname, p in modules[name].named_parameters(recurse=False):
            prule = config.param_rule(op, pname)
            if not prule.is_quantized:
                plan.params[pname] = None
                continue
            per_channel = (
                params.per_channel if params.per_channel is not None else bool(rule.per_channel_quantization)
            )
            # The target's safe weight range (e.g. ORT's 7-bit reduce_range) caps what was asked.
            bw = config.target.weight_bits(params.param_bw) if pname == "weight" else params.param_bw
            plan.params[pname] = _param_spec(op, pname, p, bw, bool(prule.is_symmetric), per_channel, params)
        if op == "Gather" and "weight" in plan.params and act.dtype == "int":
            # An embedding table is no layer weight to aimet-onnx: the tensor the looked-up rows come
            # from, quantized as an activation; the Gather's output stays on its grid, unquantized.
            plan.params["weight"], plan.output = act, None
            plan.reasons["params"] = "embedding table: quantized as an activation (aimet-onnx)"
        plans[name] = plan
    # 2. foldable BatchNorms and supergroups: no quantizer inside a fused chain.
    fused_outputs: set[str] = set()
    for layer, bn in _foldable_bn_pairs(qnodes, op_types):
        plans[layer].output = None
        fused_outputs.add(layer)
        for pname in plans[bn].params:
            plans[bn].params[pname] = None
        plans[bn].reasons["params"] = f"folded into {layer} on target"
    excluded = excluded_from_supergroups(modules)
    chain_types = exported_op_types(op_types, modules)
    for chain in supergroup_chains(qnodes, chain_types, config.supergroups, excluded):
        for first, second in itertools.pairwise(chain):
            plans[first].output = None
            fused_outputs.add(first)
            plans[second].reasons["input"] = f"inside supergroup {'+'.join(chain_types[c] for c in chain)}"
    bias_inputs = _matmul_add_biases(qnodes, op_types, modules, gm, config)
    for layer, (add, index) in bias_inputs.items():
        plans[layer].output = None
        fused_outputs.add(layer)
        plans[add].reasons[f"input.{index}"] = f"bias of {layer} (MatmulAdd: one Gemm on target)"
    skipped_inputs = {(add, index) for add, index in bias_inputs.values()}
    # 3. tensors computed only from integer/bool model inputs and constants (an attention mask's
    #    fill, shapes) reach their readers unquantized: the target precomputes them. The output of
    #    a module that computes one (the mask's Where) is quantized like any other, as aimet-onnx
    #    does: the observed range [finfo.min, 0] holds 0 exactly and finfo.min as a huge negative, so
    #    the mask survives.
    derived_nodes = _constant_derived(gm, modules)
    # 4. inputs: quantize what reaches a module unquantized.
    for n in qnodes:
        plan = plans[str(n.target)]
        rule = config.op_rule(plan.op_type)
        for i, arg in enumerate(n.args):
            if not isinstance(arg, fx.Node) or (str(n.target), i) in skipped_inputs:
                continue
            source = _true_producer(arg, gm)
            if source.name in derived_nodes and source.op != "get_attr":
                # Computed from integer inputs and constants only (a mask's fill, position tables from
                # shapes): the target precomputes it; a grid over {finfo.min} would have no range.
                plan.reasons[f"input.{i}"] = "computed from integer inputs and constants only: kept in float"
                continue
            need = bool(rule.is_input_quantized) or _needs_input_quantizer(
                source, gm, plans, fused_outputs, config
            )
            if need and _is_float_tensor(arg):
                plan.inputs[i] = QuantSpec(
                    bitwidth=params.output_bw,
                    symmetric=bool(rule.is_symmetric),
                    dtype=_dtype(params.act_dtype, params.output_bw),
                )
    # 5. what aimet-onnx imposes after its config (dynamic MatMul weights, normalization params).
    apply_exception_rules(gm, plans, config, _true_producer)
    # 6. model outputs.
    if config.model_output_quantized is not None:
        for out in _output_producers(gm):
            name = str(out.target)
            if name in plans and name not in fused_outputs:
                plans[name].output = (
                    QuantSpec(bitwidth=params.output_bw, dtype=_dtype(params.act_dtype, params.output_bw))
                    if config.model_output_quantized
                    else None
                )
    # 7. per-layer overrides, in order.
    for override in config.overrides:
        for name, plan in plans.items():
            if fnmatch.fnmatchcase(name, override.pattern):
                _apply_override(plan, override, modules[name], params, config.target.weight_bits)
    # 8. a Concat's single-reader inputs share its output quantizer, as aimet-onnx ties them.
    tie_concat_inputs(gm, plans, _true_producer)
    # 9. a Relu's/AveragePool's output shares its input's quantizer, as aimet-onnx ties them.
    tie_forward_outputs(gm, plans, _true_producer)
    del nodes
    return plans


def _centred_range(constraint: tuple[float, float | None] | None) -> bool:
    """A fixed range centred on 0 (HTP's Tanh [-1, 1]): aimet-onnx makes that quantizer symmetric."""
    if constraint is None or constraint[1] is None:
        return False
    return math.isclose(constraint[0], -constraint[1], rel_tol=1e-5, abs_tol=1e-8)


def _dtype(act_dtype: str, bw: int) -> Literal["int", "float"]:
    return "float" if act_dtype == "float" or (act_dtype == "auto" and bw == 16) else "int"


def _param_spec(
    op: str, pname: str, p: torch.Tensor, bw: int, symmetric: bool, per_channel: bool, params: QuantParams
) -> QuantSpec:
    if params.param_dtype == "float":
        return QuantSpec(bitwidth=16, dtype="float")
    axis = _PER_CHANNEL_AXIS.get(op) if pname == "weight" and p.dim() >= 2 else None
    if axis is not None and params.block_size:
        return QuantSpec(
            bitwidth=bw, symmetric=symmetric, granularity="per_block", axis=axis, block_size=params.block_size
        )
    if axis is not None and per_channel:
        return QuantSpec(bitwidth=bw, symmetric=symmetric, granularity="per_channel", axis=axis)
    return QuantSpec(bitwidth=bw, symmetric=symmetric)


def _is_float_tensor(node: fx.Node) -> bool:
    val = node.meta.get("val", node.meta.get("tensor_meta"))
    dtype = getattr(val, "dtype", None)
    return dtype is None or dtype.is_floating_point


def _true_producer(node: fx.Node, gm: fx.GraphModule) -> fx.Node:
    """Walk back through value-preserving ops to the node that computed the values."""
    while is_data_movement(node, gm) and node.args and isinstance(node.args[0], fx.Node):
        node = node.args[0]
    return node


def _needs_input_quantizer(
    source: fx.Node, gm: fx.GraphModule, plans: dict[str, ModulePlan], fused: set[str], config: QuantSimConfig
) -> bool:
    if source.op == "placeholder":
        return config.model_input_quantized
    if source.op == "get_attr":
        return True  # a constant (buffer) feeding an op: quantize it where it is used
    if source.op == "call_module" and str(source.target) in plans:
        plan = plans[str(source.target)]
        if plan.op_type == "Gather" and plan.params.get("weight") is not None:
            return False  # rows of a quantized table
        return plan.output is None and plan.name not in fused
    # Computation the preparer left as a function, or a module with no quantized counterpart: quantized
    # at its readers, unless the function is an op the config leaves unquantized (a Cast, default
    # config): aimet-onnx has one quantizer per tensor, disabled there, and none at the readers
    # (MobileViT's TorchScript file casts a shape to float and divides it by the patch size).
    op_type = FUNCTION_OP_TYPES.get(source.target) if source.op == "call_function" else None
    return op_type is None or bool(config.op_rule(op_type).is_output_quantized)


def _constant_derived(gm: fx.GraphModule, modules: dict[str, nn.Module]) -> set[str]:
    """Names of nodes whose value depends on no float model input and no parameter."""
    derived: set[str] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if not _is_float_tensor(node):
                derived.add(node.name)
            continue
        if node.op == "get_attr":
            # Scalars and integer buffers (a mask's fill, shapes, position ids) are what the target
            # precomputes; a float table (an embedding matrix the converter kept as a constant) is
            # data like a weight: what is looked up in it is quantized, as AIMET does.
            value = _get_attr(gm, str(node.target))
            if not (isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() > 1):
                derived.add(node.name)
            continue
        if node.op == "call_module" and any(
            True for _ in modules[str(node.target)].parameters(recurse=False)
        ):
            continue
        if node.op in ("call_module", "call_function", "call_method"):
            inputs = node.all_input_nodes
            if all(i.name in derived for i in inputs):
                derived.add(node.name)
    return derived


def _foldable_bn_pairs(qnodes: list[fx.Node], op_types: dict[str, str]) -> list[tuple[str, str]]:
    pairs = []
    for n in qnodes:
        name = str(n.target)
        users = list(n.users)
        if op_types[name] in _FOLDABLE_INTO and len(users) == 1:
            user = users[0]
            if (
                user.op == "call_module"
                and op_types.get(str(user.target)) == "BatchNormalization"
                and user.args[0] is n
            ):
                pairs.append((name, str(user.target)))
    return pairs


def _matmul_add_biases(
    qnodes: list[fx.Node],
    op_types: dict[str, str],
    modules: dict[str, nn.Module],
    gm: fx.GraphModule,
    config: QuantSimConfig,
) -> dict[str, tuple[str, int]]:
    """``{linear: (add, input index)}`` for bias-less linears whose sole reader adds a constant vector.

    An imported ONNX ``MatMul(x, W) + b`` is a bias-less linear and an Add of a constant. AIMET's
    ``MatmulAdd`` pass (in ``supergroup_pass_list``) fuses the pair into one Gemm whose bias is a
    parameter (left in float by every shipped config), so neither the MatMul's output nor the constant
    gets a quantizer; quantizing them here would write encodings aimet-onnx's strict loader rejects.
    """
    if "MatmulAdd" not in config.supergroup_passes or config.param_rule("Gemm", "bias").is_quantized:
        return {}
    found: dict[str, tuple[str, int]] = {}
    for n in qnodes:
        layer = modules[str(n.target)]
        if not isinstance(layer, nn.Linear) or layer.bias is not None or len(n.users) != 1:
            continue
        add = next(iter(n.users))
        if add.op != "call_module" or op_types.get(str(add.target)) != "Add" or len(add.args) != 2:
            continue
        index = 1 if add.args[0] is n else 0
        const = add.args[index]
        if add.args[1 - index] is not n or not isinstance(const, fx.Node) or const.op != "get_attr":
            continue
        value = functools.reduce(getattr, str(const.target).split("."), gm)
        if isinstance(value, torch.Tensor) and value.dim() == 1 and value.numel() == layer.out_features:
            found[str(n.target)] = (str(add.target), index)
    return found


def _output_producers(gm: fx.GraphModule) -> list[fx.Node]:
    out = next(n for n in gm.graph.nodes if n.op == "output")
    found: list[fx.Node] = []

    def visit(a: object) -> None:
        if isinstance(a, fx.Node):
            found.append(_true_producer(a, gm))
        elif isinstance(a, list | tuple):
            for x in a:
                visit(x)
        elif isinstance(a, dict):
            for x in a.values():
                visit(x)

    visit(out.args[0])
    return [n for n in found if n.op == "call_module"]


def _apply_override(
    plan: ModulePlan, o: Override, module: nn.Module, params: QuantParams, weight_bits: Callable[[int], int]
) -> None:
    if o.enabled is False:
        plan.inputs = [None] * len(plan.inputs)
        plan.output = None
        plan.params = dict.fromkeys(plan.params)
        plan.reasons["override"] = f"disabled by override {o.pattern!r}"
        return
    if o.param_scheme:
        plan.param_scheme = o.param_scheme
    if o.act_scheme:
        plan.act_scheme = o.act_scheme

    def act(spec: QuantSpec | None) -> QuantSpec | None:
        if spec is None:
            return None
        bw = o.output_bw if o.output_bw is not None else spec.bitwidth
        dtype = _dtype(o.act_dtype, bw) if o.act_dtype else spec.dtype
        sym = o.act_symmetric if o.act_symmetric is not None else spec.symmetric
        return QuantSpec(bitwidth=16 if dtype == "float" else bw, symmetric=sym, dtype=dtype)

    plan.output = act(plan.output)
    plan.inputs = [act(s) for s in plan.inputs]
    for pname, spec in list(plan.params.items()):
        if spec is None:
            continue
        per_channel = o.per_channel if o.per_channel is not None else spec.granularity == "per_channel"
        sym = o.param_symmetric if o.param_symmetric is not None else spec.symmetric
        bw = o.param_bw if o.param_bw is not None else spec.bitwidth
        bw = weight_bits(bw) if pname == "weight" else bw
        block = o.block_size if o.block_size is not None else spec.block_size
        p = dict(module.named_parameters(recurse=False))[pname]
        plan.params[pname] = _param_spec(
            plan.op_type,
            pname,
            p,
            bw,
            sym,
            per_channel,
            QuantParams(block_size=block, param_dtype=params.param_dtype),
        )


def _get_attr(gm: fx.GraphModule, target: str) -> object:
    """The value of a ``get_attr`` target, dotted paths (``model.layer.table``, torch.export) included."""
    try:
        return functools.reduce(getattr, target.split("."), gm)
    except AttributeError:
        return None
