"""``scaled_dot_product_attention`` as the ONNX nodes torch's exporter writes for it, one module each.

lowbit keeps attention as one fused module (core/graph/ops.py), one output quantizer. Its ONNX export
(TorchScript exporter, opset 17, ``symbolic_opset14.scaled_dot_product_attention``) writes
``Transpose(k) → Mul(q, √scale), Mul(kᵀ, √scale) → MatMul → [Where(mask, 0, -inf)] → Add → Softmax
→ [Where(IsNaN, 0, ·)] → MatMul(·, v)``, and a target that quantizes every node output (aimet-onnx's
placement, ``target.decomposed_ops: per_node``) rounds each of them on its own calibrated grid: the
scores and the softmax are not on any input's grid, so unlike GELU (core/quantsim/decomposed.py)
they need quantizers of their own. :func:`decompose_attention` rewrites each fused module into those
nodes (ops modules: each gets quantizers by the ordinary placement, V symmetric as P·V's second
input), with the same float32 constants, so the export writes the same ONNX nodes the loader of an
ONNX file would turn into the same modules.
"""

from __future__ import annotations

import torch
from torch import fx

from core.graph import ops


def decompose_attention(gm: fx.GraphModule) -> list[str]:
    """Replace each fused attention module of ``gm`` by its node-per-op form; the names replaced.

    Left fused: a mask of unknown dtype, causal attention (its mask is built from shapes), dropout,
    and a scale the module does not fix (``None``: the exporter computes it from shapes at run time).
    """
    replaced = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = gm.get_submodule(str(node.target))
        if not isinstance(module, ops.ScaledDotProductAttention):
            continue
        if module.is_causal or module.dropout_p or module.scale is None:
            continue
        q, k, v, mask = (*node.args, None)[:4]
        if isinstance(mask, fx.Node) and _mask_is_bool(mask) is None:
            continue  # bool or float decides the nodes written; unknown here
        _rewrite(gm, node, str(node.target), q, k, v, mask, float(module.scale))
        replaced.append(str(node.target))
    if replaced:
        gm.graph.lint()
        gm.recompile()
    return replaced


def _mask_is_bool(mask: fx.Node) -> bool | None:
    meta = mask.meta.get("val", mask.meta.get("tensor_meta"))
    dtype = getattr(meta, "dtype", None)
    return None if dtype is None else dtype == torch.bool


def _rewrite(
    gm: fx.GraphModule,
    node: fx.Node,
    name: str,
    q: fx.Node,
    k: fx.Node,
    v: fx.Node,
    mask: object,
    scale: float,
) -> None:
    prefix = name.replace(".", "_")
    root = name.rsplit(".", 1)[0] if "." in name else ""

    def add_module(suffix: str, module: torch.nn.Module) -> str:
        target = f"{root}.{name.rsplit('.', 1)[-1]}_{suffix}" if root else f"{name}_{suffix}"
        gm.add_submodule(target, module)
        return target

    def add_const(suffix: str, value: float) -> fx.Node:
        attr = f"{prefix}_{suffix}"
        gm.register_buffer(attr, torch.tensor(value, dtype=torch.float32))
        return gm.graph.get_attr(attr)

    graph = gm.graph
    with graph.inserting_before(node):
        # The exporter's √scale: Sqrt of a float32 constant, folded to one float32 scalar.
        root_scale = float(torch.sqrt(torch.tensor(scale, dtype=torch.float32)))
        kt = graph.call_function(torch.transpose, (k, -2, -1))
        qs = graph.call_module(add_module("mul_q", ops.Mul()), (q, add_const("sqrt_scale_q", root_scale)))
        ks = graph.call_module(add_module("mul_k", ops.Mul()), (kt, add_const("sqrt_scale_k", root_scale)))
        scores = graph.call_module(add_module("matmul_qk", ops.MatMul()), (qs, ks))
        is_bool = isinstance(mask, fx.Node) and _mask_is_bool(mask)
        if isinstance(mask, fx.Node):
            if is_bool:
                fill = graph.call_module(
                    add_module("mask_fill", ops.Where()), (mask, add_const("mask_zero", 0.0), float("-inf"))
                )
            else:
                fill = mask
            scores = graph.call_module(add_module("mask_add", ops.Add()), (scores, fill))
        probs = graph.call_module(add_module("softmax", ops.Softmax(-1)), (scores,))
        if is_bool:
            # No safe softmax in ONNX: a fully masked row is 0/0; the exporter zeroes the NaNs.
            nan = graph.call_function(torch.isnan, (probs,))
            nan.meta["val"] = torch.empty((), dtype=torch.bool)  # a bool input: never quantized
            probs = graph.call_module(add_module("nan_to_zero", ops.Where()), (nan, 0.0, probs))
        out = graph.call_module(add_module("matmul_pv", ops.MatMul()), (probs, v))
    node.replace_all_uses_with(out)
    graph.erase_node(node)
    gm.delete_submodule(name)
