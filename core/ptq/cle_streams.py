"""Cross-layer equalization across residual additions ("streams"), an extension beyond DFQ and AIMET.

A residual stream is the set of tensors joined by additions and positively homogeneous activations
between the layers that write it (producers) and the layers that read it (consumers): in a MobileNetV2
net, the stem conv and a block's projection conv are summed and read by the next expand convs. Dividing
output channel c of every producer by ``s_c`` divides every tensor of the stream by ``s_c`` (sums and
ReLUs commute with a positive per-channel scale), which multiplying input channel c of every consumer by
``s_c`` undoes — the function is unchanged. ``s = sqrt(max_p r_p / max_q r_q)`` over producers' output
ranges and consumers' input ranges balances the widest of each, the pairwise rule generalised.

Pairwise CLE cannot reach these layers because the stream's tensors have several readers; without this
the first conv of a MobileNet (one input channel, the widest per-tensor spread) stays unequalized.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import fx, nn

from core.graph.ops import Add
from core.ptq.graph_walk import module_of
from core.ptq.weight_channels import (
    in_channel_absmax,
    num_in_channels,
    num_out_channels,
    out_channel_absmax,
    scale_in_channels,
    scale_out_channels,
)

_ADDS = (operator.add, torch.add)
Family = Callable[[nn.Module | None], str | None]
Predicate = Callable[[nn.Module | None], bool]
_EPS = 1e-12


@dataclass(frozen=True)
class ResidualStream:
    """Layers writing (``producers``) and reading (``consumers``) one residual stream, and the ReLU6
    activation modules inside it (which must become ReLU for the scaling to be exact)."""

    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    relu6: tuple[str, ...]


def _is_add(node: fx.Node, gm: fx.GraphModule) -> bool:
    """``a + b`` of two tensors: a traced ``operator.add``/``torch.add`` or a prepared graph's Add module."""
    if node.op == "call_module":
        is_add = isinstance(gm.get_submodule(str(node.target)), Add)
    else:
        is_add = node.op == "call_function" and node.target in _ADDS
    return (
        is_add and len(node.args) == 2 and not node.kwargs and all(isinstance(a, fx.Node) for a in node.args)
    )


def _stream_from(
    gm: fx.GraphModule, start: fx.Node, family_of: Family, homogeneous: tuple[type, ...], is_relu6: Predicate
) -> ResidualStream | None:
    """Grow the stream that ``start`` (a layer's output) belongs to; None when it leaks anywhere a
    per-channel scale would change the function (model output, a non-layer op, another family)."""
    family = family_of(module_of(gm, start))
    tensors: set[fx.Node] = set()
    producers: set[str] = set()
    consumers: set[str] = set()
    relu6: set[str] = set()
    todo = [start]
    has_add = False
    while todo:
        node = todo.pop()
        if node in tensors:
            continue
        module = module_of(gm, node)
        if family_of(module) is not None:
            if family_of(module) != family:
                return None
            producers.add(str(node.target))
        elif _is_add(node, gm):
            has_add = True
            todo.extend(a for a in node.args if isinstance(a, fx.Node))
        elif isinstance(module, homogeneous) or is_relu6(module):
            if is_relu6(module):
                relu6.add(str(node.target))
            todo.append(node.args[0])  # type: ignore[arg-type]  # a module call's data input
        else:
            return None
        tensors.add(node)
        for user in node.users:
            user_module = module_of(gm, user)
            if family_of(user_module) is not None:
                reads_data_only = user.args[0] is node and sum(a is node for a in user.all_input_nodes) == 1
                if family_of(user_module) != family or not reads_data_only or user.kwargs:
                    return None
                consumers.add(str(user.target))
            elif _is_add(user, gm) or isinstance(user_module, homogeneous) or is_relu6(user_module):
                todo.append(user)
            else:
                return None
    if not has_add or not consumers:
        return None
    return ResidualStream(tuple(sorted(producers)), tuple(sorted(consumers)), tuple(sorted(relu6)))


def find_residual_streams(
    gm: fx.GraphModule, family_of: Family, homogeneous: tuple[type, ...], is_relu6: Predicate
) -> list[ResidualStream]:
    """Every residual stream of ``gm`` whose tensors pass only through additions and homogeneous
    activations (ReLU6 counted, for the caller to replace) and whose layers share one family and width."""
    streams: list[ResidualStream] = []
    seen: set[str] = set()
    for node in gm.graph.nodes:
        if family_of(module_of(gm, node)) is None or str(node.target) in seen:
            continue
        stream = _stream_from(gm, node, family_of, homogeneous, is_relu6)
        if stream is None:
            continue
        seen.update(stream.producers)
        widths = {num_out_channels(gm.get_submodule(p)) for p in stream.producers}
        widths |= {num_in_channels(gm.get_submodule(c)) for c in stream.consumers}
        if len(widths) == 1:
            streams.append(stream)
    return streams


def scale_stream(gm: fx.GraphModule, stream: ResidualStream) -> torch.Tensor:
    """Balance the widest producer and consumer range per channel; returns the factor applied to every
    producer's output channels (1/s)."""
    producers = [gm.get_submodule(p) for p in stream.producers]
    consumers: list[nn.Module] = [gm.get_submodule(c) for c in stream.consumers]
    r_out = torch.stack([out_channel_absmax(m) for m in producers]).amax(0)
    r_in = torch.stack([in_channel_absmax(m) for m in consumers]).amax(0)
    ok = (r_out > _EPS) & (r_in > _EPS)
    s = torch.sqrt(torch.where(ok, r_out / r_in.clamp_min(_EPS), torch.ones_like(r_out)))
    with torch.no_grad():
        for m in producers:
            scale_out_channels(m, 1.0 / s)
        for m in consumers:
            scale_in_channels(m, s)
    return 1.0 / s
