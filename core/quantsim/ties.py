"""Quantizers aimet-onnx ties together: a Concat input that feeds nothing else uses the Concat output's;
a Relu's or AveragePool's output uses its input's.

aimet-onnx 2.42 (``QuantizationSimModel._tie_quantizers_for_op_types``, on by default) makes the
quantizer that last rounded each input of a Concat the *same object* as the Concat's output
quantizer, when that input feeds nothing else: the runtime (QNN) requires one encoding on the inputs
and the output of a Concat. So the input is rounded once, on the Concat's grid, where a sim with its
own quantizer there would round it twice (its own grid, then the Concat's; corpus MobileViT: 39.3 dB
against aimet-onnx, identical once tied). The tied quantizer observes all of those tensors during
calibration, as aimet-onnx's does; with min-max that is the Concat output's range.

Not mirrored: a fixed-range input (Softmax/Sigmoid [0, 1] in HTP configs) is left untied, as aimet-onnx
does, but the case where every input has the same fixed range (aimet-onnx then gives the Concat that
range) keeps the Concat's own calibration.

Forward ties (``_propagate_input_encodings``): the output quantizer of a Relu or AveragePool (and of
Resize/Upsample, which HTP resizes on its input's grid) is the *effective* quantizer of its input:
the enabled quantizer found walking back through ops that keep the grid (reshapes, float casts). So
a bias-less ``MatMul → Relu`` (T5's FFN; no supergroup, unlike Gemm+Relu) rounds the Relu's output
on the MatMul output's grid, the tied quantizer calibrated over the MatMul's range, where separate
quantizers would round it again on a finer ``[0, max]`` grid (corpus T5: 31.2 dB and top-1 93.8 %
against aimet-onnx, identical once tied). Not mirrored: an output with its own fixed range (aimet-onnx
merges the constraints into the input's quantizer) stays untied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import fx

if TYPE_CHECKING:
    from core.quantsim.placement import ModulePlan

Producer = Callable[[fx.Node, fx.GraphModule], fx.Node]
_TIED_TO_OUTPUT = frozenset({"Concat"})
_TIED_TO_INPUT = frozenset({"Relu", "AveragePool", "Resize", "Upsample"})


def _path_to_source(
    arg: fx.Node, gm: fx.GraphModule, true_producer: Producer
) -> tuple[fx.Node, list[fx.Node]]:
    """The node that computed ``arg``'s values and the value-preserving nodes between them."""
    source = true_producer(arg, gm)
    path: list[fx.Node] = []
    node = arg
    while node is not source:
        path.append(node)
        node = node.args[0]  # type: ignore[assignment]  # true_producer walks first arguments
    return source, path


def tie_concat_inputs(gm: fx.GraphModule, plans: dict[str, ModulePlan], true_producer: Producer) -> None:
    """Record in each Concat's plan the quantizers (``<module>.output.0`` / ``<module>.input.<i>``)
    that are to be its output quantizer; QuantSim installs one quantizer object for all of them."""
    for node in gm.graph.nodes:
        name = str(node.target)
        plan = plans.get(name) if node.op == "call_module" else None
        if plan is None or plan.op_type not in _TIED_TO_OUTPUT or plan.output is None:
            continue
        for i, arg in enumerate(node.args):
            if not isinstance(arg, fx.Node):
                continue
            source, path = _path_to_source(arg, gm, true_producer)
            readers = (set(source.users) | {u for p in path for u in p.users}) - set(path)
            if len(readers) > 1:
                continue  # the tensor feeds another op too: aimet-onnx keeps its own quantizer
            if i < len(plan.inputs) and plan.inputs[i] is not None:
                plan.shares.append(f"{name}.input.{i}")
            elif source.op == "call_module" and str(source.target) in plans:
                producer = plans[str(source.target)]
                if producer.output is not None and producer.output_constraint is None:
                    plan.shares.append(f"{producer.name}.output.0")
                    producer.reasons["output.0"] = f"tied to {name}'s output quantizer (Concat)"


def tie_forward_outputs(gm: fx.GraphModule, plans: dict[str, ModulePlan], true_producer: Producer) -> None:
    """Record, for each Relu/AveragePool/Resize whose input is quantized, that its output quantizer is
    the one its input was rounded by (in ``shares`` of the plan that owns that quantizer's output
    slot, or of the op itself when the quantizer is its own input quantizer)."""
    for node in gm.graph.nodes:
        name = str(node.target)
        plan = plans.get(name) if node.op == "call_module" else None
        if plan is None or plan.op_type not in _TIED_TO_INPUT or plan.output is None:
            continue
        if plan.output_constraint is not None or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        if plan.inputs and plan.inputs[0] is not None:
            plan.shares.append(f"{name}.input.0")
        else:
            source = true_producer(node.args[0], gm)
            producer = plans.get(str(source.target)) if source.op == "call_module" else None
            if producer is None or producer.output is None or producer.output_constraint is not None:
                continue
            producer.shares.append(f"{name}.output.0")
        plan.reasons["output.0"] = f"tied to its input's quantizer ({plan.op_type})"
