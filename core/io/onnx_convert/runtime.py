"""Functions that converted graphs call where ONNX semantics differ from a single torch function.

They run inside the generated GraphModule's forward, so they must be plain torch on their inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def onnx_shape(x: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
    """ONNX Shape: the dimensions of ``x`` (``start:end``) as an int64 tensor."""
    return torch.tensor(list(x.shape)[start:end], dtype=torch.int64)


def onnx_reshape(x: torch.Tensor, shape: torch.Tensor | list[int], allowzero: int = 0) -> torch.Tensor:
    """ONNX Reshape: a 0 in ``shape`` copies the input dimension unless ``allowzero``."""
    dims = [int(d) for d in (shape.tolist() if isinstance(shape, torch.Tensor) else shape)]
    if not allowzero:
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return torch.reshape(x, dims)


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
    starts_l = starts.tolist() if isinstance(starts, torch.Tensor) else list(starts)
    ends_l = ends.tolist() if isinstance(ends, torch.Tensor) else list(ends)
    axes_l = list(range(len(starts_l))) if axes is None else [a % x.dim() for a in axes]
    steps_l = [1] * len(starts_l) if steps is None else list(steps)
    out = x
    for axis, start, end, step in zip(axes_l, starts_l, ends_l, steps_l, strict=True):
        size = out.shape[axis]
        if step > 0:
            out = out[(slice(None),) * axis + (slice(start, end, step),)]
        else:
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
    return torch.full([int(d) for d in shape.tolist()], value.reshape(-1)[0].item(), dtype=value.dtype)


def expand(x: torch.Tensor, shape: torch.Tensor | list[int]) -> torch.Tensor:
    """ONNX Expand: bidirectional broadcast of ``x`` with ``shape``."""
    dims = shape.tolist() if isinstance(shape, torch.Tensor) else list(shape)
    return x * torch.ones(dims, dtype=x.dtype)


def interpolate_to_size(
    x: torch.Tensor, sizes: torch.Tensor, mode: str, align_corners: bool | None
) -> torch.Tensor:
    """Resize to a size computed in the graph (``sizes`` covers every dimension)."""
    return F.interpolate(x, size=[int(s) for s in sizes.tolist()[2:]], mode=mode, align_corners=align_corners)


def prelu(x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """ONNX PRelu with a slope that broadcasts in a way nn.PReLU does not reproduce."""
    return torch.where(x >= 0, x, x * slope)
