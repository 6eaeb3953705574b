"""Bias as the integer target adds it: int32 at scale input_scale × weight_scale.

An integer Conv/Gemm kernel accumulates ``q_x · q_w`` in int32 at scale ``s_x · s_w`` (per output
channel for per-channel weights) and adds the bias on that grid, so the runtime first rounds the
float bias to ``round(b / (s_x · s_w))`` (ONNX Runtime does this when it fuses DQ→Conv→Q into
QLinearConv; QNN does it for HTP). With a coarse grid — 4-bit weights, wide activations — the
rounding moves outputs by up to half a step per channel, which adds up over many layers.

:func:`round_biases` puts each bias of the simulated model on that grid in place, after the
encodings are known; a float bias already on the grid is what the runtime reads back unchanged,
so the exported model and the sim agree. It is called by QuantSim when the config's ``target``
says ``"bias": "int32"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import fx

from core.quantsim.placement import _true_producer

if TYPE_CHECKING:
    from core.quant.encoding import Encoding
    from core.quant.quantizer import Quantizer
    from core.quantsim.mixin import QuantizationMixin
    from core.quantsim.sim import QuantSim

# Op types whose bias the integer kernel adds in the accumulator.
ACCUMULATING_OP_TYPES = frozenset({"Conv", "ConvTranspose", "Gemm"})
_INT32 = 2**31 - 1


def round_biases(sim: QuantSim) -> int:
    """Round every Conv/Gemm bias to int32 at input × weight scale; the number of biases rounded."""
    rounded = 0
    nodes = {str(n.target): n for n in sim.model.graph.nodes if n.op == "call_module"}
    for name, plan in sim.plans.items():
        if plan.op_type not in ACCUMULATING_OP_TYPES or name not in nodes:
            continue
        module = cast("QuantizationMixin", sim.model.get_submodule(name))
        bias = getattr(module, "bias", None)
        wq = (
            cast("Quantizer | None", module.param_quantizers["weight"])
            if "weight" in module.param_quantizers
            else None
        )
        w_enc = wq.encoding if wq is not None and wq.enabled else None
        if not isinstance(bias, torch.Tensor) or wq is None or w_enc is None:
            continue
        if wq.spec.granularity == "per_block":
            continue  # no single accumulator scale per output channel
        x_enc = _input_encoding(sim, nodes[name])
        if x_enc is None:
            continue  # the input reaches the layer in float: the target runs it in float too
        scale = (x_enc.scale.reshape(-1)[:1] * w_enc.scale.reshape(-1)).to(bias.dtype)
        scale = scale.expand(bias.shape[0]) if scale.numel() == 1 else scale.reshape(bias.shape)
        with torch.no_grad():
            steps = torch.round(bias / scale).clamp(-_INT32 - 1, _INT32)
            bias.copy_(steps * scale)
        module.clear_param_cache()
        rounded += 1
    return rounded


def _input_encoding(sim: QuantSim, node: fx.Node) -> Encoding | None:
    """The encoding of the tensor a layer multiplies: its own input quantizer, else its producer's output."""
    module = cast("QuantizationMixin", sim.model.get_submodule(str(node.target)))
    own = cast("Quantizer | None", module.input_quantizers[0]) if len(module.input_quantizers) else None
    if own is not None and _active(own):
        return own.encoding
    if not node.args or not isinstance(node.args[0], fx.Node):
        return None
    source = _true_producer(node.args[0], sim.model)
    if source.op != "call_module":
        return None
    outs = getattr(sim.model.get_submodule(str(source.target)), "output_quantizers", None)
    q = cast("Quantizer | None", outs[0]) if outs is not None and len(outs) else None
    return q.encoding if q is not None and _active(q) else None


def _active(q: Quantizer) -> bool:
    return q.enabled and q.encoding is not None and q.spec.dtype == "int"
