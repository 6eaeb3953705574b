"""``load_encodings``: an encodings file (any version) back into a QuantSim's quantizers.

Names are resolved through the tensor map (core/export/tensor_map.py), recomputed from the sim
by a fresh in-memory ONNX export unless one is given, so files written by :func:`export_sim`
(or by AIMET for the same model) land on the quantizers that produced them. Encodings are
copied bit for bit: scales as float32, offsets as integers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.export.grid_preserving import GRID_PRESERVING_OPS, GridGraph, record_upstream
from core.export.reader import parse_encodings, read_encodings_file
from core.export.records import EncodingRecord, EncodingsDoc
from core.export.tensor_map import TensorMap
from core.quant.encoding import Encoding, QuantSpec
from core.quant.grouping import num_groups


def _expected_groups(spec: QuantSpec, shape: tuple[int, ...] | None) -> int | None:
    if spec.granularity == "per_tensor":
        return 1
    if shape is None:
        return None
    return num_groups(shape, spec)


def _encoding_for(
    record: EncodingRecord, current: QuantSpec, shape: tuple[int, ...] | None, where: str
) -> Encoding:
    if record.dtype == "float":
        return record.to_encoding()
    # 0.6.1 cannot tell a one-channel per-channel encoding from a per-tensor one.
    one_channel = shape is not None and _expected_groups(current, shape) == 1
    if record.granularity == "per_tensor" and current.granularity == "per_channel" and one_channel:
        record = replace(record, granularity="per_channel")
    enc = record.to_encoding(current)
    expected = _expected_groups(enc.spec, shape)
    if expected is not None and expected != record.num_groups:
        raise ConfigError(
            f"{where}: encoding {record.name!r} has {record.num_groups} scale(s) but the tensor "
            f"(shape {list(shape or ())}) needs {expected} for {enc.spec.granularity} quantization"
        )
    return enc


def batch_norms_folded_in(sim: Any, doc: EncodingsDoc) -> bool:
    """Whether ``doc`` was computed on weights with BatchNorm folded in, for a sim that still has BNs.

    AIMET's flow folds BN into the weights before its QuantSim (aimet-onnx warns otherwise), so a
    file AIMET wrote without any entry of a BatchNormalization tensor encodes folded weights; a
    file AIMET wrote on an unfolded model carries the BN weights and outputs.
    """
    if not str(doc.producer.get("package", "")).startswith("aimet"):
        return False
    bns = [name for name, plan in sim.plans.items() if plan.op_type == "BatchNormalization"]
    names = doc.names()
    return bool(bns) and not any(n.startswith(f"{bn}.") or f"/{bn}/" in n for bn in bns for n in names)


def _requantized_copies(graph: Any, doc: EncodingsDoc) -> set[str]:
    """Names of tensors that only move values of a tensor the file already encodes (AIMET quantizes
    the output of a Flatten/Reshape/... or exports the encoding it derives there; lowbit looks through
    such ops, the values are the same)."""
    if graph is None:
        return set()
    from core.quantsim.data_movement import VALUE_PRESERVING_OP_TYPES

    moving = VALUE_PRESERVING_OP_TYPES | GRID_PRESERVING_OPS
    producers = {o: n for n in graph.node for o in n.output}
    copies = set()
    for name in doc.names():
        node = producers.get(name)
        while node is not None and node.op_type in moving and node.input:
            source = node.input[0]
            if doc.get(source) is not None and source not in copies:
                copies.add(name)
                break
            node = producers.get(source)
    return copies


def _is_accumulator_bias(record: EncodingRecord | None) -> bool:
    return record is not None and record.dtype == "int" and record.bitwidth == 32


def load_encodings(
    sim: Any,
    source: str | os.PathLike[str] | Mapping[str, Any] | EncodingsDoc,
    freeze: bool = False,
    strict: bool = True,
    tensor_map: TensorMap | None = None,
    user_graph: Any = None,
    ignored: dict[str, str] | None = None,
) -> list[str]:
    """Set the sim's quantizers from an encodings file (0.6.1 / 1.0.0 / 2.0.0), a parsed dict or doc.

    ``strict``: every enabled quantizer must find an encoding and every encoding a quantizer,
    else ConfigError naming them. Non-strict: quantizers without an encoding keep theirs and
    unknown names are ignored. Disabled quantizers stay disabled and untouched. ``freeze``:
    loaded quantizers are frozen (compute_encodings leaves them alone); loading replaces an
    earlier frozen encoding. Returns the keys of the quantizers that were set. ``user_graph``: the
    ONNX graph the model was imported from, whose data-movement outputs a file written by AIMET for
    that graph may encode (copies of an encoding it holds; lowbit's graph may not have the tensor).
    ``ignored``: filled with the file's names that set no quantizer and why (non-strict: also those
    that match nothing).
    """
    if isinstance(source, EncodingsDoc):
        doc, where = source, str(source.source or "encodings")
    elif isinstance(source, Mapping):
        doc, where = parse_encodings(dict(source), "encodings dict"), "encodings dict"
    else:
        doc, where = read_encodings_file(source), str(Path(source))
    graph = None
    walker = None
    bounds: set[str] = set()
    if tensor_map is None:
        from core.export.constant_inputs import clip_bound_names
        from core.export.sim_export import trace_tensor_map

        proto, tensor_map = trace_tensor_map(sim)
        graph = proto.graph
        walker = GridGraph(graph, proto.opset_import)
        bounds = clip_bound_names(proto)  # written by export for AIMET; the sim has no quantizer there
    user_tensors = None
    if user_graph is not None and graph is not None:
        from core.export.user_inputs import UserTensors

        user_tensors = UserTensors.of(sim.model, graph, user_graph)
    quantizers = sim.quantizers()
    params = dict(sim.model.named_parameters())
    used: set[str] = set()
    missing: list[str] = []
    updates: list[tuple[str, Any, Encoding]] = []
    for key, q in quantizers.items():
        binding = tensor_map.bindings.get(key)
        # A file written for aimet-onnx holds it in front of grid-preserving ops (grid_preserving.py).
        record = record_upstream(doc, walker, binding.tensor) if binding is not None else None
        if record is None and binding is not None and user_tensors is not None:
            # AIMET run on the user's file names it as that file does (core/export/user_inputs.py).
            record = next(filter(None, map(doc.get, user_tensors.candidates(binding))), None)
        if record is None:
            if q.enabled:
                missing.append(key if binding is None else f"{key} (tensor {binding.tensor!r})")
            continue
        used.add(record.name)
        if not q.enabled:
            continue  # disabled stays disabled; the tensor's encoding belongs to another quantizer
        fqn = "" if binding is None else f"{binding.module}.{binding.index}".lstrip(".")
        is_param = binding is not None and binding.role == "param" and fqn in params
        shape = tuple(params[fqn].shape) if is_param else None
        if _is_accumulator_bias(record):
            continue  # a quantizer of the sim's own on a bias keeps its encoding
        updates.append((key, q, _encoding_for(record, q.spec, shape, where)))
    # int32 entries are biases on the accumulator grid (AIMET 2.0.0 writes them by default): the sim
    # derives that grid from the input and weight encodings, so they need no quantizer.
    accumulator = {n for n in doc.names() if _is_accumulator_bias(doc.get(n))}
    copies = _requantized_copies(graph, doc) | _requantized_copies(user_graph, doc)
    if user_graph is not None:
        from core.export.constant_inputs import clip_bound_names

        bounds |= clip_bound_names(user_graph)  # AIMET quantizes the user's Clip bounds and Pad fills
    # Tensors inside an op the ONNX export decomposes (GELU at opset 17): written for aimet-onnx,
    # which quantizes each; lowbit runs the op as one module.
    from core.export.decomposed_ops import decomposed_op_names

    inside = set().union(*(decomposed_op_names(g, doc, used) for g in (graph, user_graph) if g is not None))
    exact: set[str] = set()
    again: set[str] = set()
    if user_graph is not None:
        from core.export.user_inputs import encoded_again_downstream, exactly_represented

        rest = doc.names() - used - accumulator - bounds - copies - inside
        exact = exactly_represented(user_graph, doc, rest)
        again = encoded_again_downstream(user_graph, doc, rest - exact, used)
    unknown = sorted(doc.names() - used - accumulator - bounds - copies - inside - exact - again)
    if ignored is not None:
        reasons = [
            (
                accumulator,
                "int32 bias: the sim derives the accumulator grid from the input and weight encodings",
            ),
            (bounds, "constant Clip bound or Pad fill: the sim has no quantizer there"),
            (copies, "output of a value-moving op whose input the file encodes: the same values"),
            (
                inside,
                "intermediate of an op the ONNX graph decomposes: the sim derives it from the op's input grid",
            ),
            (exact, "constant the encoding represents exactly: quantizing it changes nothing"),
            (again, "read only by grid-preserving ops whose outputs the file encodes alike: rounded there"),
            (set(unknown), "matches no quantizer of this sim"),
        ]
        for names, why in reasons:
            for name in sorted(names & doc.names() - used):
                ignored.setdefault(name, why)
    if strict and (missing or unknown):
        parts = []
        if missing:
            parts.append(f"no encoding for quantizers {', '.join(missing)}")
        if unknown:
            parts.append(f"names that match no quantizer of this sim: {', '.join(unknown)}")
        raise ConfigError(f"{where}: {'; '.join(parts)} (pass strict=False to load what matches)")
    for _key, q, enc in updates:
        q.unfreeze()
        q.set_encoding(enc)
        if freeze:
            q.freeze()
    if user_graph is not None:
        from core.export.user_chains import adopt_user_chains

        for name in adopt_user_chains(sim, user_graph, doc):
            (ignored or {}).pop(name, None)  # the sim rounds on it now
    for module in sim.quantized_modules().values():
        clear = getattr(module, "clear_param_cache", None)
        if clear is not None:
            clear()
    return [key for key, _, _ in updates]


__all__ = ["batch_norms_folded_in", "load_encodings"]
