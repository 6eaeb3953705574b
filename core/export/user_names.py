"""The user's own tensor names in exported graphs of an imported ONNX model.

The FP32 export re-traces the prepared model, so its tensors get the exporter's names
(``/features_conv/Conv_output_0``, ``features_conv.weight``). For a model that came from an ONNX
file the converter recorded, per graph node, the user's tensor it computes (node meta
``onnx_tensor``) and the user's initializers behind its module's parameters (``onnx_params``).
Here the exported tensors at module outputs and the parameter initializers take those names back,
wherever the mapping is one to one: a user name claimed twice (a tied weight, a module that runs
twice) or already taken by another tensor of the export is left alone.

>>> names = recorded_names(sim.model)                          # doctest: +SKIP
>>> renamed = rename_tensors(marked, names)                    # doctest: +SKIP
>>> renamed.params["features_conv.weight"]                     # doctest: +SKIP
'onnx::Conv_232'
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnx
from onnx import numpy_helper
from torch import fx

from core.export.onnx_export import Boundary, MarkedExport

# Written by core.io.onnx_convert (kept as strings: export does not import the converter).
ONNX_TENSOR = "onnx_tensor"
ONNX_PARAMS = "onnx_params"
ONNX_CLIP_BOUNDS = "onnx_clip_bounds"


@dataclass(frozen=True)
class UserNames:
    """User tensor names by module output boundary, and by parameter (``module.param``)."""

    outputs: dict[Boundary, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    clip_bounds: dict[Boundary, tuple[str, str]] = field(default_factory=dict)


def recorded_names(model: fx.GraphModule | object) -> UserNames:
    """What the ONNX converter recorded on ``model``'s graph (empty for other models)."""
    graph = getattr(model, "graph", None)
    if not isinstance(graph, fx.Graph):
        return UserNames()
    outputs: dict[Boundary, str] = {}
    params: dict[str, str] = {}
    bounds: dict[Boundary, tuple[str, str]] = {}
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        target = str(node.target)
        tensor = node.meta.get(ONNX_TENSOR)
        if isinstance(tensor, str):
            outputs[(target, "out", 0)] = tensor
        for pname, user in (node.meta.get(ONNX_PARAMS) or {}).items():
            params[f"{target}.{pname}"] = str(user)
        clip = node.meta.get(ONNX_CLIP_BOUNDS)
        if isinstance(clip, list | tuple) and len(clip) == 2:
            bounds[(target, "out", 0)] = (str(clip[0]), str(clip[1]))
    return UserNames(outputs, params, bounds)


def _one_to_one(wanted: dict[str, str], taken: set[str]) -> dict[str, str]:
    """Keep renames whose new name is claimed once and collides with no tensor outside ``wanted``."""
    counts = Counter(wanted.values())
    return {
        old: new
        for old, new in wanted.items()
        if counts[new] == 1 and (new == old or new not in taken or new in wanted)
    }


def rename_tensors(marked: MarkedExport, names: UserNames) -> dict[str, str]:
    """Rename tensors of ``marked.model`` in place (and its boundaries); returns parameter → tensor name.

    Graph inputs and outputs keep their names (the exporter already has the user's).
    """
    graph = marked.model.graph
    fixed = {i.name for i in graph.input} | {o.name for o in graph.output}
    taken = {t.name for t in graph.initializer} | fixed
    for node in graph.node:
        taken.update(node.output)
        taken.update(node.input)
    wanted: dict[str, str] = {}
    for boundary, user in names.outputs.items():
        exported = marked.boundaries.get(boundary)
        if exported is not None and exported not in fixed:
            wanted.setdefault(exported, user)
    initializers = {t.name for t in graph.initializer}
    for param, user in names.params.items():
        if param in initializers:
            wanted.setdefault(param, user)
    # Names that are renamed away free themselves up; a chain (a→b, b→c) is resolved in one pass.
    rename = _one_to_one(wanted, taken - set(wanted) | fixed)
    _name_clip_bounds(marked, names, taken - set(rename) | set(rename.values()))
    if not rename:
        return {}
    _apply(marked.model, rename)
    for key, tensor in list(marked.boundaries.items()):
        marked.boundaries[key] = rename.get(tensor, tensor)
    return {param: rename[param] for param in names.params if param in rename}


def _name_clip_bounds(marked: MarkedExport, names: UserNames, taken: set[str]) -> None:
    """Give each exported Clip's constant min/max the user's names (encodings key them, see
    core/export/constant_inputs.py). Exporters share one constant among many Clips, so several
    exported constants may take one user name: they hold one value, so one producer is kept."""
    graph = marked.model.graph
    producers = {out: node for node in graph.node for out in node.output}
    inits = {t.name: t for t in graph.initializer}
    rename: dict[str, str] = {}
    values: dict[str, bytes] = {}
    for boundary, users in names.clip_bounds.items():
        tensor = marked.boundaries.get(boundary)
        clip = producers.get(tensor or "")
        if clip is None or clip.op_type != "Clip" or len(clip.input) < 3:
            continue
        for exported, user in zip(clip.input[1:3], users, strict=True):
            value = _constant_bytes(exported, producers, inits)
            if not exported or value is None or (user in taken and user not in values):
                continue
            if values.setdefault(user, value) != value or rename.get(exported, user) != user:
                continue
            rename[exported] = user
    if not rename:
        return
    _apply(marked.model, rename)
    seen: set[str] = set()
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] in values:
            if node.output[0] in seen:
                continue
            seen.add(node.output[0])
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    unique = []
    for init in graph.initializer:
        if init.name in values:
            if init.name in seen:
                continue
            seen.add(init.name)
        unique.append(init)
    del graph.initializer[:]
    graph.initializer.extend(unique)


def _constant_bytes(
    name: str, producers: dict[str, onnx.NodeProto], inits: dict[str, onnx.TensorProto]
) -> bytes | None:
    if name in inits:
        return numpy_helper.to_array(inits[name]).tobytes()
    node = producers.get(name)
    if node is None or node.op_type != "Constant":
        return None
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t).tobytes()
    return None


def _apply(model: onnx.ModelProto, rename: dict[str, str]) -> None:
    graph = model.graph
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for tensor in graph.initializer:
        tensor.name = rename.get(tensor.name, tensor.name)
    for info in graph.value_info:
        info.name = rename.get(info.name, info.name)
