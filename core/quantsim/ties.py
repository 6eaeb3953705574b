"""Quantizers aimet-onnx ties together: a Concat input that feeds nothing else uses the Concat output's.

aimet-onnx 2.42 (``QuantizationSimModel._tie_quantizers_for_op_types``, on by default) makes the
quantizer that last rounded each input of a Concat the *same object* as the Concat's output
quantizer, when that input feeds nothing else: the runtime (QNN) requires one encoding on the inputs
and the output of a Concat. So the input is rounded once, on the Concat's grid, where a sim with its
own quantizer there would round it twice (its own grid, then the Concat's; corpus MobileViT: 39.3 dB
against aimet-onnx, identical once tied). The tied quantizer observes all of those tensors during
calibration, as aimet-onnx's does; with min-max that is the Concat output's range.

Not mirrored: a fixed-range input (Softmax/Sigmoid [0, 1] in HTP configs) is left untied, as aimet-onnx
does, but the case where every input has the same fixed range (aimet-onnx then gives the Concat that
range) keeps the Concat's own calibration. Resize, whose output aimet-onnx ties forward to its input's
quantizer, is not tied either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import fx

if TYPE_CHECKING:
    from core.quantsim.placement import ModulePlan

Producer = Callable[[fx.Node, fx.GraphModule], fx.Node]
_TIED_TO_OUTPUT = frozenset({"Concat"})


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
