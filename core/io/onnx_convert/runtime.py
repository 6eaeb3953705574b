"""Functions that converted graphs call where ONNX semantics differ from a single torch function.

They run inside the generated GraphModule's forward, so they must be plain torch on their inputs.

Sizes computed in the graph (a ``Shape`` result, a Concat of them) stay tensors here: a size list is
built with ``unbind`` and shapes are read with ``torch._shape_as_tensor``, never ``.tolist()`` or
``int()``. The TorchScript tracer behind the ONNX export then records them as graph values, so the
exported model keeps the user's dynamic dimensions (``.tolist()`` would bake in the example's size).
"""

from __future__ import annotations

import typing

import torch
import torch.nn.functional as F

Sizes = torch.Tensor | list[int]


def size_list(sizes: Sizes) -> list[int]:
    """A size argument for torch (``torch.full``, ``reshape``, ``repeat``): 0-d tensors from a tensor,
    which eager torch reads as ints and the tracer records as run-time values (typed as ints for that)."""
    if isinstance(sizes, torch.Tensor):
        return typing.cast(list[int], list(sizes.to(torch.int64).reshape(-1).unbind(0)))
    return list(sizes)


def onnx_shape(x: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
    """ONNX Shape: the dimensions of ``x`` (``start:end``) as an int64 tensor."""
    return torch._shape_as_tensor(x)[start:end]


def onnx_reshape(x: torch.Tensor, shape: Sizes, allowzero: int = 0) -> torch.Tensor:
    """ONNX Reshape: a 0 in ``shape`` copies the input dimension unless ``allowzero``."""
    if not isinstance(shape, torch.Tensor):
        dims = [int(d) for d in shape]
        if not allowzero:
            dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        return torch.reshape(x, dims)
    target = shape.to(torch.int64).reshape(-1)
    if not allowzero:
        # Pad the input's shape so a target longer than the input's rank still lines up.
        own = torch.cat([torch._shape_as_tensor(x), torch.ones_like(target)])[: target.shape[0]]
        target = torch.where(target == 0, own, target)
    return torch._reshape_from_tensor(x, target)


def onnx_flatten(x: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX Flatten: a 2-D result, dimensions before ``axis`` times dimensions from ``axis``."""
    outer = 1
    for d in x.shape[:axis]:
        outer *= d
    inner = 1
    for d in x.shape[axis:]:
        inner *= d
    return torch.reshape(x, (outer, inner))


def onnx_gather(x: torch.Tensor, indices: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX Gather: negative indices count from the end; output dims = x[:axis] + indices + x[axis+1:]."""
    idx = indices.to(torch.int64)
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    picked = torch.index_select(x, axis, idx.reshape(-1))
    return picked.reshape(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1 :]))


def onnx_slice(
    x: torch.Tensor,
    starts: torch.Tensor | list[int],
    ends: torch.Tensor | list[int],
    axes: list[int] | None = None,
    steps: list[int] | None = None,
) -> torch.Tensor:
    """ONNX Slice with clamping of out-of-range bounds and negative steps."""
    count = len(starts) if not isinstance(starts, torch.Tensor) else starts.reshape(-1).shape[0]
    axes_l = list(range(count)) if axes is None else [a % x.dim() for a in axes]
    steps_l = [1] * len(axes_l) if steps is None else list(steps)
    if any(step < 0 for step in steps_l):
        # Negative steps pick explicit indices: computed bounds are read as numbers here.
        starts = starts.tolist() if isinstance(starts, torch.Tensor) else starts
        ends = ends.tolist() if isinstance(ends, torch.Tensor) else ends
    # Bounds computed in the graph stay 0-d tensors: Python slicing takes them, the tracer records them.
    starts_l, ends_l = size_list(starts), size_list(ends)
    out = x
    for axis, start, end, step in zip(axes_l, starts_l, ends_l, steps_l, strict=True):
        size = out.shape[axis]
        if step > 0:
            out = out[(slice(None),) * axis + (slice(start, end, step),)]
        else:
            start, end = int(start), int(end)
            # Python's range semantics match ONNX's clamping for negative steps too.
            start = min(max(start + size if start < 0 else start, -1), size - 1)
            end = min(max(end + size if end < 0 else end, -1), size - 1)
            picked = list(range(size))[start : (None if end < 0 else end) : step]
            out = torch.index_select(out, axis, torch.tensor(picked, dtype=torch.int64))
    return out


def onnx_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ONNX Div: integer inputs divide with truncation, floats divide exactly."""
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return torch.div(a, b)


def hard_sigmoid(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """ONNX HardSigmoid: ``clamp(alpha * x + beta, 0, 1)``."""
    return torch.clamp(x * alpha + beta, 0.0, 1.0)


def softmax_2d(x: torch.Tensor, axis: int, log: bool = False) -> torch.Tensor:
    """Softmax before opset 13: over all dimensions from ``axis``, as a flattened 2-D tensor."""
    flat = onnx_flatten(x, axis)
    out = F.log_softmax(flat, dim=1) if log else F.softmax(flat, dim=1)
    return out.reshape(x.shape)


def cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ONNX Cast."""
    return x.to(dtype)


def constant_of_shape(shape: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """ONNX ConstantOfShape: ``shape``-shaped tensor filled with the single element of ``value``."""
    return torch.full(size_list(shape), value.reshape(-1)[0].item(), dtype=value.dtype)


def expand(x: torch.Tensor, shape: Sizes) -> torch.Tensor:
    """ONNX Expand: bidirectional broadcast of ``x`` with ``shape``."""
    return x * torch.ones(size_list(shape), dtype=x.dtype)


def interpolate_to_size(
    x: torch.Tensor, sizes: torch.Tensor, mode: str, align_corners: bool | None
) -> torch.Tensor:
    """Resize to a size computed in the graph (``sizes`` covers every dimension)."""
    return F.interpolate(x, size=size_list(sizes[2:]), mode=mode, align_corners=align_corners)


def prelu(x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """ONNX PRelu with a slope that broadcasts in a way nn.PReLU does not reproduce."""
    return torch.where(x >= 0, x, x * slope)


def gather_elements(x: torch.Tensor, indices: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX GatherElements (negative indices count from the end)."""
    idx = indices.to(torch.int64)
    return torch.gather(x, axis, torch.where(idx < 0, idx + x.shape[axis], idx))


def gather_nd(x: torch.Tensor, indices: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    """ONNX GatherND: the last index dimension addresses leading dimensions of ``x`` after ``batch_dims``.

    One advanced-indexing expression (no loop over the batch), so a traced export keeps the batch open.
    """
    idx = indices.to(torch.int64)
    depth = idx.shape[-1]
    lead = idx.shape[:-1]
    if batch_dims:
        flat_x = x.reshape((-1, *x.shape[batch_dims:]))
        flat_i = idx.reshape((-1, *idx.shape[batch_dims:]))
    else:
        flat_x, flat_i = x.unsqueeze(0), idx.unsqueeze(0)
    sizes = torch._shape_as_tensor(flat_x)[1 : 1 + depth]
    where = torch.where(flat_i < 0, flat_i + sizes, flat_i)
    rows = torch.arange(flat_x.shape[0]).reshape((-1,) + (1,) * (where.dim() - 2))
    picked = flat_x[(rows, *(where[..., d] for d in range(depth)))]
    return picked.reshape((*lead, *picked.shape[where.dim() - 1 :]))


def cumsum(x: torch.Tensor, axis: int, exclusive: int = 0, reverse: int = 0) -> torch.Tensor:
    """ONNX CumSum with its ``exclusive`` and ``reverse`` attributes."""
    y = torch.flip(x, [axis]) if reverse else x
    out = torch.cumsum(y, axis).to(x.dtype)
    if exclusive:
        out = out - y
    return torch.flip(out, [axis]) if reverse else out


def onnx_mod(a: torch.Tensor, b: torch.Tensor, fmod: int = 0) -> torch.Tensor:
    """ONNX Mod: the sign of the divisor (Python's %) unless ``fmod`` (C's fmod, sign of the dividend)."""
    return torch.fmod(a, b) if fmod else torch.remainder(a, b)


def onnx_split(x: torch.Tensor, sizes: list[int], axis: int) -> tuple[torch.Tensor, ...]:
    """ONNX Split into pieces of ``sizes`` along ``axis``."""
    return tuple(torch.split(x, sizes, axis))


def onnx_split_even(x: torch.Tensor, parts: int, axis: int) -> tuple[torch.Tensor, ...]:
    """ONNX Split into ``parts`` pieces, the last one smaller when the size does not divide."""
    size = x.shape[axis]
    step = -(-size // parts)
    return tuple(torch.split(x, step, axis))


def onnx_pad(x: torch.Tensor, pads: list[int], mode: str, value: float) -> torch.Tensor:
    """ONNX Pad (constant, reflect, edge) with ``pads`` in torch's order."""
    if mode == "constant":
        return F.pad(x, pads, value=value)
    return F.pad(x, pads, mode="replicate" if mode == "edge" else mode)


def onnx_pad_computed(x: torch.Tensor, pads: torch.Tensor, mode: str, value: float) -> torch.Tensor:
    """ONNX Pad whose ``pads`` (all begins, then all ends) are computed in the graph."""
    flat = size_list(pads)
    n = len(flat) // 2
    pairs = []
    for axis in reversed(range(n)):
        pairs += [flat[axis], flat[axis + n]]
    return onnx_pad(x, pairs, mode, value)


def tile(x: torch.Tensor, repeats: Sizes) -> torch.Tensor:
    """ONNX Tile."""
    return x.repeat(size_list(repeats))


def trilu(x: torch.Tensor, k: int, upper: int) -> torch.Tensor:
    """ONNX Trilu."""
    return torch.triu(x, k) if upper else torch.tril(x, k)


def _register() -> None:
    from core.graph.fx_functions import register_data_movement, register_function_op_type, register_pad

    # Split and Tile hand out their input's values (aimet-onnx leaves their outputs unquantized and
    # quantizes the tensor in front); a pad is looked through only when it pads zeros (register_pad);
    # Trilu writes zeros aimet-onnx quantizes after it.
    register_data_movement(
        onnx_reshape, onnx_flatten, onnx_gather, onnx_slice, expand, gather_elements, gather_nd,
        onnx_split, onnx_split_even, tile,
    )  # fmt: skip
    register_data_movement(onnx_pad, onnx_pad_computed, trilu, value_preserving=False)
    register_data_movement(onnx_shape, cast, constant_of_shape, value_preserving=False)
    register_pad(onnx_pad, onnx_pad_computed)
    register_function_op_type(cast, "Cast")


_register()
