"""``export_sim``: a QuantSim to ``<prefix>.onnx``, ``<prefix>.encodings`` and ``<prefix>_qdq.onnx``.

>>> sim = QuantSim(model, (x,)); sim.compute_encodings([x])          # doctest: +SKIP
>>> result = export_sim(sim, "out/", encoding_version="1.0.0")        # doctest: +SKIP
>>> result.tensor_map["conv1.param.weight"], result.tensor_map["relu1.output.0"]   # doctest: +SKIP
('conv1.weight', '/relu1/Relu_output_0')
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from core.errors import LowbitError
from core.export.constant_inputs import add_clip_bound_encodings
from core.export.decomposed_ops import add_decomposed_op_encodings
from core.export.formats import get_format
from core.export.grid_preserving import move_to_sources
from core.export.onnx_export import DEFAULT_OPSET, export_marked_onnx
from core.export.qdq import build_qdq_model
from core.export.reader import write_encodings_file
from core.export.records import EncodingRecord, EncodingsDoc
from core.export.tensor_map import TensorBinding, TensorMap, build_tensor_map
from core.export.tied_params import conflicting_aliases, shared_parameter_names, untied
from core.export.user_names import recorded_names, rename_tensors
from core.quant.encoding import Encoding

# AIMET's names for the range-setting schemes (quantizer_args.quant_scheme).
_AIMET_SCHEMES = {
    "min_max": "post_training_tf",
    "sqnr": "post_training_tf_enhanced",
    "percentile": "post_training_percentile",
    "mse": "post_training_mse",
}
# When two quantizers land on one tensor the file can hold only one encoding: prefer the
# producer's (it is what the next op's hardware reads).
_ROLE_PRIORITY = {"param": 0, "output": 1, "input": 2}


@dataclass(frozen=True)
class ExportResult:
    """Paths written by :func:`export_sim` and the quantizer → ONNX tensor map used for them."""

    onnx: Path
    encodings: Path
    qdq_onnx: Path | None
    tensor_map: TensorMap
    encoding_version: str
    warnings: tuple[str, ...] = ()


@contextmanager
def float_view(sim: Any) -> Iterator[nn.Module]:
    """``sim.model`` with every quantized module temporarily back to its original class.

    The export must carry the sim's current weights (BN folding, AdaRound and QAT change
    ``sim.model``, not ``fp_model``) without any quantization in the traced graph.
    """
    modules = list(sim.quantized_modules().values())
    classes = [type(m) for m in modules]
    try:
        for m in modules:
            m.__class__ = getattr(type(m), "_lowbit_original", type(m))
        yield sim.model
    finally:
        for m, cls in zip(modules, classes, strict=True):
            m.__class__ = cls


def _default_names(sim: Any, attr: str, count: int, stem: str) -> list[str]:
    names = getattr(sim, attr, None)
    if names and len(names) == count:
        return list(names)
    return [stem] if count == 1 else [f"{stem}_{i}" for i in range(count)]


def _count_outputs(model: nn.Module, inputs: Sequence[Any]) -> int:
    with torch.no_grad():
        out = model(*inputs)
    return len(out) if isinstance(out, tuple | list) else 1


def trace_tensor_map(
    sim: Any,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
) -> tuple[onnx.ModelProto, TensorMap]:
    """Export the sim's float model to ONNX (in memory) and bind every quantizer to its tensor."""
    inputs = tuple(sim.example_inputs)
    quantized = sim.quantized_modules()  # before float_view hides the quantized classes
    module_names = list(quantized)
    aliases = shared_parameter_names(sim.model)
    own = conflicting_aliases(aliases, {k: m.onnx_type for k, m in quantized.items()})
    with float_view(sim) as model, untied(model, own):
        was_training = model.training
        model.eval()
        try:
            n_out = _count_outputs(model, inputs)
        finally:
            model.train(was_training)
        in_names = list(input_names or _default_names(sim, "input_names", len(inputs), "input"))
        out_names = list(output_names or _default_names(sim, "output_names", n_out, "output"))
        dims = getattr(sim, "dynamic_dims", None) or None  # none declared: the batch dimension
        marked = export_marked_onnx(
            model, inputs, module_names, in_names, out_names, opset, dynamic_dims=dims
        )
    param_names = rename_tensors(marked, recorded_names(sim.model))
    for alias, canonical in aliases.items():  # tied weights (core/export/tied_params.py)
        if alias not in own:
            param_names.setdefault(alias, param_names.get(canonical, canonical))
    return marked.model, build_tensor_map(list(sim.quantizers()), marked, param_names=param_names)


def _quantizer_args(sim: Any) -> dict[str, Any]:
    params = getattr(sim, "params", None)
    pq = [q for k, q in sim.quantizers().items() if ".param." in k]
    scheme = getattr(params, "act_scheme", "min_max")
    return {
        "activation_bitwidth": getattr(params, "output_bw", 8),
        "dtype": getattr(params, "act_dtype", "int"),
        "is_symmetric": all(q.spec.symmetric for q in pq) if pq else True,
        "param_bitwidth": getattr(params, "param_bw", 8),
        "per_channel_quantization": any(q.spec.granularity != "per_tensor" for q in pq),
        "quant_scheme": _AIMET_SCHEMES.get(scheme, scheme),
    }


def _producer() -> dict[str, str]:
    try:
        version = metadata.version("lowbit")
    except metadata.PackageNotFoundError:
        version = "0.1.0"
    return {"package": "lowbit", "version": version}


def collect_encodings(
    sim: Any, tmap: TensorMap
) -> tuple[EncodingsDoc, list[tuple[TensorBinding, Encoding]], list[str]]:
    """The file's records, the (binding, encoding) pairs for QDQ, and warnings about merged tensors.

    Raises LowbitError if an enabled quantizer has no encoding yet or no tensor in the graph.
    """
    quantizers = sim.quantizers()
    enabled = {k: q for k, q in quantizers.items() if q.enabled}
    lost = {k: why for k, why in tmap.unmapped.items() if k in enabled}
    if lost:
        details = "; ".join(f"{k}: {why}" for k, why in sorted(lost.items()))
        raise LowbitError(f"quantizers without a tensor in the exported ONNX graph: {details}")
    uncalibrated = sorted(k for k, q in enabled.items() if q.encoding is None)
    if uncalibrated:
        raise LowbitError(
            f"quantizers without an encoding: {', '.join(uncalibrated)}; "
            "run sim.compute_encodings(data) or sim.load_encodings(path) before exporting"
        )
    items: list[tuple[TensorBinding, Encoding]] = []
    params = dict(sim.model.named_parameters())
    chosen: dict[str, tuple[TensorBinding, Encoding]] = {}
    warnings: list[str] = []
    order = sorted(enabled, key=lambda k: _ROLE_PRIORITY[tmap.bindings[k].role])
    for key in order:
        binding, enc = tmap.bindings[key], enabled[key].encoding
        assert enc is not None
        items.append((binding, enc))
        held = chosen.get(binding.tensor)
        if held is None:
            chosen[binding.tensor] = (binding, enc)
        elif not held[1].equals(enc):
            warnings.append(
                f"tensor {binding.tensor!r} carries two different encodings ({held[0].quantizer}, {key}); "
                f"the file keeps {held[0].quantizer}'s, the QDQ model applies both"
            )
    activations: dict[str, EncodingRecord] = {}
    param_records: dict[str, EncodingRecord] = {}
    for tensor, (binding, enc) in chosen.items():
        if binding.role == "param":
            fqn = f"{binding.module}.{binding.index}" if binding.module else binding.index
            shape = tuple(params[fqn].shape) if fqn in params else None
            param_records[tensor] = EncodingRecord.from_encoding(tensor, enc, shape)
        else:
            activations[tensor] = EncodingRecord.from_encoding(tensor, enc)
    # Keep file order close to the graph: activations in quantizer order, params by name order.
    key_order = {k: i for i, k in enumerate(quantizers)}
    first_key: dict[str, int] = {}
    for binding, _ in items:
        first_key.setdefault(binding.tensor, key_order[binding.quantizer])
    activations = dict(sorted(activations.items(), key=lambda kv: first_key[kv[0]]))
    param_records = dict(sorted(param_records.items(), key=lambda kv: first_key[kv[0]]))
    doc = EncodingsDoc(
        version="",
        activations=activations,
        params=param_records,
        quantizer_args=_quantizer_args(sim),
        excluded_layers=list(getattr(sim, "excluded_layers", []) or []),
        producer=_producer(),
    )
    return doc, items, warnings


def _rounds_decomposed_ops(sim: Any) -> bool:
    config = getattr(sim, "config", None)
    return bool(config is not None and config.target.rounds_decomposed_ops)


def _fixed_ranges(sim: Any) -> dict[str, tuple[float, float]]:
    if getattr(sim, "config", None) is None:
        return {}
    from core.quantsim.decomposed import fixed_output_ranges

    return fixed_output_ranges(sim)


def _decomposed_items(doc: EncodingsDoc, names: Sequence[str]) -> list[tuple[TensorBinding, Encoding]]:
    """QDQ entries for the nodes (and constants) of decomposed activations: what a target that
    rounds node by node quantizes beyond the sim's own quantizers."""
    return [
        (
            TensorBinding(quantizer=f"decomposed.{name}", module="", role="output", index="0", tensor=name),
            doc.activations[name].to_encoding(),
        )
        for name in names
    ]


def export_sim(
    sim: Any,
    out_dir: str | os.PathLike[str],
    prefix: str = "model",
    encoding_version: str = "1.0.0",
    qdq: bool = True,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Write ``<prefix>.onnx`` (FP32, AIMET tensor names), ``<prefix>.encodings`` (AIMET format
    ``encoding_version``: 0.6.1, 1.0.0 or 2.0.0) and, if ``qdq``, ``<prefix>_qdq.onnx``.

    Every enabled quantizer of the sim gets exactly one encoding in the file (two quantizers on one
    tensor share it), keyed by ONNX tensor name (activations) or parameter name (weights); every
    name in the file is a tensor of the exported graph. Input/output names default to the sim's
    ``input_names``/``output_names`` if it has them, else ``input``/``output`` (``_0``, ``_1``...).
    """
    get_format(encoding_version)  # fail on a bad version before the slow part
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    proto, tmap = trace_tensor_map(sim, input_names, output_names, opset)
    doc, items, warnings = collect_encodings(sim, tmap)
    # A decomposed activation the sim rounds over the user's own chain (encodings AIMET wrote for it).
    from core.export.user_chains import export_user_chains

    for name, enc in export_user_chains(sim, proto.graph, tmap.as_dict()):
        doc.activations[name] = EncodingRecord.from_encoding(name, enc)
        items.append(
            (
                TensorBinding(
                    quantizer=f"decomposed.{name}", module="", role="output", index="0", tensor=name
                ),
                enc,
            )
        )
    move_to_sources(doc, proto)  # where aimet-onnx places them (same arithmetic: the op is on the grid)
    act_bw = int(doc.quantizer_args.get("activation_bitwidth", 8))
    add_clip_bound_encodings(doc, proto, act_bw)
    decomposed = add_decomposed_op_encodings(doc, proto, act_bw, _fixed_ranges(sim))
    if _rounds_decomposed_ops(
        sim
    ):  # the sim rounds them (core/quantsim/decomposed.py): so does the QDQ model
        items += _decomposed_items(doc, decomposed.rounded)
    onnx_path = out / f"{prefix}.onnx"
    onnx.save(proto, onnx_path)
    enc_path = write_encodings_file(doc, out / f"{prefix}.encodings", encoding_version)
    qdq_path = None
    if qdq:
        qdq_path = out / f"{prefix}_qdq.onnx"
        onnx.save(build_qdq_model(proto, items), qdq_path)
    return ExportResult(
        onnx=onnx_path,
        encodings=enc_path,
        qdq_onnx=qdq_path,
        tensor_map=tmap,
        encoding_version=encoding_version,
        warnings=tuple(tmap.warnings) + tuple(warnings),
    )
