"""Which graph nodes only move data: their output holds values of their input (reshape, transpose,
dropout in eval mode, max-pool, zero or copy pads, ...), so a tensor's quantization state passes through
them. Quantizer placement (core/quantsim/placement.py) looks through these nodes: they neither need nor
break a quantizer.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from core.graph.fx_functions import FUNCTION_OP_TYPES, PAD_FUNCTIONS, VALUE_PRESERVING_FUNCTIONS
from core.graph.op_types import has_op_type, onnx_op_type

# Op types whose output holds exactly the values of their (first) input, so the quantization
# state of the tensor passes through them unchanged.
VALUE_PRESERVING_OP_TYPES = frozenset(
    {
        "Identity",
        "Dropout",
        "Flatten",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Expand",
        "MaxPool",
        "GlobalMaxPool",
        "Slice",
        "Split",
        "DepthToSpace",
        "SpaceToDepth",
    }
)
DATA_MOVEMENT_FUNCTIONS = frozenset(
    {
        operator.getitem,
        torch.reshape,
        torch.flatten,
        torch.permute,
        torch.transpose,
        torch.squeeze,
        torch.unsqueeze,
        torch.narrow,
        torch.chunk,
        torch.split,
        torch.t,
        torch.movedim,
        torch.swapaxes,
        torch.select,
        torch.nn.functional.dropout,
        torch.clone,
    }
)
DATA_MOVEMENT_METHODS = frozenset(
    {
        "view",
        "reshape",
        "permute",
        "transpose",
        "flatten",
        "squeeze",
        "unsqueeze",
        "contiguous",
        "expand",
        "expand_as",
        "chunk",
        "split",
        "t",
        "to",
        "clone",
        "narrow",
        "select",
        "view_as",
        "repeat",
        "unflatten",
        "__getitem__",
        "size",
        "dim",
        "float",
        "type_as",
        "detach",
    }
)
# The same ops as ATen overload packets, as graphs captured by torch.export hold them
# (aten.view.default, aten.flatten.using_ints, ...). Only ops whose output values are a subset of
# their first input's values: creation ops (zeros_like, full, ...) and padding are not listed.
DATA_MOVEMENT_ATEN = frozenset(
    {
        "view",
        "reshape",
        "_unsafe_view",
        "permute",
        "transpose",
        "t",
        "flatten",
        "unflatten",
        "squeeze",
        "unsqueeze",
        "expand",
        "expand_as",
        "contiguous",
        "clone",
        "alias",
        "detach",
        "slice",
        "select",
        "narrow",
        "index_select",
        "split",
        "split_with_sizes",
        "chunk",
        "unbind",
        "movedim",
        "swapaxes",
        "repeat",
        "tile",
        "flip",
        "roll",
        "pixel_shuffle",
        "pixel_unshuffle",
        "dropout",
        "feature_dropout",
        "lift_fresh_copy",
    }
)
# Modules that are no layer on target: they carry no quantizer and are looked through.
NOT_QUANTIZED_MODULES = (nn.Identity, nn.Dropout, nn.Flatten, nn.Unflatten)


def pads_zero(node: fx.Node) -> bool:
    """A pad whose new values are on every quantization grid: zeros (AIMET's grids always hold 0) or
    copies of the input (reflect, replicate, circular). AIMET counts Pad as grid-preserving."""
    if isinstance(node.target, torch._ops.OpOverload):
        name = node.target.overloadpacket.__name__
        if name == "constant_pad_nd":
            value = node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0)
            return value in (0, 0.0)
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
        return name == "pad" and (mode != "constant" or value in (None, 0, 0.0))
    mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
    value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
    return mode != "constant" or value in (None, 0, 0.0)


def _is_float(node: object) -> bool | None:
    """Whether an fx node's value is floating point; None when its metadata does not say."""
    if not isinstance(node, fx.Node):
        return None
    dtype = getattr(node.meta.get("val", node.meta.get("tensor_meta")), "dtype", None)
    return None if dtype is None else bool(dtype.is_floating_point)


def is_float_cast(node: fx.Node) -> bool:
    """A Cast (FUNCTION_OP_TYPES) from a float tensor to a float dtype: it moves data, as aimet-onnx
    delegates a Cast's encoding to its input (T5 casts its embedding lookup to the weights' dtype)."""
    if node.op != "call_function" or FUNCTION_OP_TYPES.get(node.target) != "Cast" or len(node.args) < 2:
        return False
    dtype = node.args[1]
    return isinstance(dtype, torch.dtype) and dtype.is_floating_point and _is_float(node.args[0]) is True


def is_data_movement(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "call_function":
        if FUNCTION_OP_TYPES.get(node.target) == "Cast":
            return is_float_cast(node)
        if node.target in PAD_FUNCTIONS or (
            isinstance(node.target, torch._ops.OpOverload)
            and node.target.overloadpacket.__name__ in ("constant_pad_nd", "pad")
        ):
            return pads_zero(node)
        if isinstance(node.target, torch._ops.OpOverload):
            name = node.target.overloadpacket.__name__
            if name in ("to", "_to_copy"):
                return _keeps_float_dtype(node)  # a Cast to its own float type: the same values
            # In-place variants (aten.dropout_ of an eval-mode nn.Dropout(inplace=True)) move data too.
            return name in DATA_MOVEMENT_ATEN or (name.endswith("_") and name[:-1] in DATA_MOVEMENT_ATEN)
        return node.target in DATA_MOVEMENT_FUNCTIONS or node.target in VALUE_PRESERVING_FUNCTIONS
    if node.op == "call_method":
        return node.target in DATA_MOVEMENT_METHODS
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        if isinstance(mod, NOT_QUANTIZED_MODULES):
            return True
        return has_op_type(mod) and onnx_op_type(mod) in VALUE_PRESERVING_OP_TYPES
    return False


def _keeps_float_dtype(node: fx.Node) -> bool:
    source = node.args[0] if node.args else None
    before = source.meta.get("val") if isinstance(source, fx.Node) else None
    after = node.meta.get("val")
    dtypes = [getattr(v, "dtype", None) for v in (before, after)]
    return dtypes[0] is not None and dtypes[0] == dtypes[1] and dtypes[0].is_floating_point
