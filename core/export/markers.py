"""Boundary markers: identity ops that tag each module's input and output tensors during ONNX export.

The TorchScript exporter names nodes from module scopes, but those names are not unique per
module once a model is prepared (fx flattens the hierarchy and the exporter suffixes repeats:
``/conv1/Conv`` and ``/conv1_1/Conv`` for ``layer1.0.conv1`` and ``layer1.1.conv1``). Instead of
guessing from names, forward hooks wrap every positional tensor input and every output of the
marked modules in a ``lowbit::Marker`` node whose ``tag`` attribute says (module, "in"/"out",
index). After export the markers are read and removed (core/export/onnx_export.py), which gives
the exact ONNX tensor at each quantizer — AIMET v1 used marker ops the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

MARKER_DOMAIN = "lowbit"
MARKER_OP = "Marker"


class _Marker(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, tag: str) -> torch.Tensor:
        return x

    @staticmethod
    def symbolic(g: Any, x: Any, tag: str) -> Any:
        return g.op(f"{MARKER_DOMAIN}::{MARKER_OP}", x, tag_s=tag)


def make_tag(module: str, kind: str, index: int) -> str:
    return json.dumps([module, kind, index])


def parse_tag(tag: str) -> tuple[str, str, int]:
    module, kind, index = json.loads(tag)
    return str(module), str(kind), int(index)


def _mark(value: Any, module: str, kind: str, index: int) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return _Marker.apply(value, make_tag(module, kind, index))
    return value


@contextmanager
def boundary_markers(model: nn.Module, module_names: list[str]) -> Iterator[None]:
    """Within the block, the named submodules of ``model`` emit marker ops around their tensors."""
    handles = []

    def pre_hook(name: str) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(_mark(a, name, "in", i) for i, a in enumerate(args))

        return hook

    def post_hook(name: str) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            if isinstance(output, tuple | list):
                return type(output)(_mark(o, name, "out", i) for i, o in enumerate(output))
            return _mark(output, name, "out", 0)

        return hook

    try:
        for name in module_names:
            sub = model.get_submodule(name)
            handles.append(sub.register_forward_pre_hook(pre_hook(name)))
            handles.append(sub.register_forward_hook(post_hook(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()
