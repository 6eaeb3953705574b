"""AIMET encodings format 2.0.0: entries aligned with ONNX QuantizeLinear (opset 23).

::

    {"version": "2.0.0",
     "encodings": [{"name": "/relu1/Relu_output_0", "output_dtype": "uint8", "y_scale": 0.0137, "y_zero_point": 0},
                   {"name": "conv1.weight", "output_dtype": "int8", "y_scale": [0.002, ...],
                    "y_zero_point": [0, ...], "axis": 0}],
     "excluded_layers": [], "quantizer_args": {...}, "producer": {...}}

Mapping to the engine's convention: asymmetric encodings are ``uint<b>`` with
``y_zero_point = −offset``; signed symmetric ones are ``int<b>`` with zero point 0
(``offset = −2^(b−1) − y_zero_point``). Per-block: ``y_scale`` nested (channels, blocks),
``axis`` = the block axis, ``block_size``. Float16 tensors are written as
``{"name", "output_dtype": "float16"}`` (the spec lists no float16 dtype; QNN keeps such tensors
in float). The reader also accepts files that split entries into ``activation_encodings`` /
``param_encodings`` lists.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from core.errors import ConfigError
from core.export.formats import EncodingFormat, register_format
from core.export.formats.fields import check_type, optional, require
from core.export.records import EncodingRecord, EncodingsDoc, check_offsets

VERSION = "2.0.0"
_DTYPE = re.compile(r"^(u?)int(\d+)$")


def _scale_json(record: EncodingRecord) -> Any:
    scale = np.asarray(record.scale, np.float32)
    if record.granularity == "per_tensor":
        return float(scale.reshape(-1)[0])
    if scale.ndim == 2:
        return [[float(v) for v in row] for row in scale]
    return [float(v) for v in scale.reshape(-1)]


def _int_json(values: np.ndarray, granularity: str) -> Any:
    ints = np.asarray(values).astype(np.int64)
    if granularity == "per_tensor":
        return int(ints.reshape(-1)[0])
    return ints.tolist()


def entry_dict(record: EncodingRecord) -> dict[str, Any]:
    if record.dtype == "float":
        return {"name": record.name, "output_dtype": f"float{record.bitwidth}"}
    if record.granularity == "per_block" and np.asarray(record.scale).ndim != 2:
        raise ConfigError(
            f"tensor {record.name!r}: per-block scales must be (channels, blocks) for format 2.0.0"
        )
    offset = np.asarray(record.offset, np.float64)
    if record.symmetric:
        dtype, zero_point = f"int{record.bitwidth}", -(2 ** (record.bitwidth - 1)) - offset
    else:
        dtype, zero_point = f"uint{record.bitwidth}", -offset
    entry: dict[str, Any] = {
        "name": record.name,
        "output_dtype": dtype,
        "y_scale": _scale_json(record),
        "y_zero_point": _int_json(zero_point, record.granularity),
    }
    if record.granularity == "per_channel":
        entry["axis"] = int(record.axis or 0)
    elif record.granularity == "per_block":
        entry["axis"] = int(record.block_axis if record.block_axis is not None else 1)
        entry["block_size"] = int(record.block_size or 0)
    return entry


def write(doc: EncodingsDoc) -> dict[str, Any]:
    return {
        "version": VERSION,
        "encodings": [entry_dict(r) for r in (*doc.activations.values(), *doc.params.values())],
        "excluded_layers": list(doc.excluded_layers),
        "quantizer_args": dict(doc.quantizer_args),
        "producer": dict(doc.producer),
    }


def _array(value: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: expected a number or a (nested) list of numbers") from exc
    if arr.dtype == object or arr.ndim > 2:
        raise ConfigError(f"{where}: expected a number, a list or a list of lists of numbers")
    return arr


def read_entry(entry: Any, where: str) -> EncodingRecord:
    check_type(entry, dict, where)
    name = require(entry, "name", str, where)
    where = f"{where} ({name!r})"
    output_dtype = require(entry, "output_dtype", str, where)
    if output_dtype in ("float16", "float32"):
        return EncodingRecord(name=name, dtype="float", bitwidth=int(output_dtype[5:]))
    match = _DTYPE.match(output_dtype)
    if output_dtype == "int32":
        # AIMET writes each bias it rounds to the int32 accumulator grid (scale = input × weight
        # scale) by default; lowbit's sim derives that grid itself (core/quantsim/bias.py).
        return EncodingRecord(name=name, dtype="int", bitwidth=32, symmetric=True)
    if not match or not 2 <= int(match.group(2)) <= 16:
        raise ConfigError(
            f"{where}: output_dtype {output_dtype!r} not supported; choose int2..int16, uint2..uint16, int32 (a bias) or float16"
        )
    unsigned, bitwidth = bool(match.group(1)), int(match.group(2))
    scale = _array(require(entry, "y_scale", (float, list), where), f"{where}, key 'y_scale'")
    zero_point = _array(
        optional(entry, "y_zero_point", (float, list), where, 0), f"{where}, key 'y_zero_point'"
    )
    if zero_point.size == 1 and scale.size > 1:
        zero_point = np.full(scale.shape, float(zero_point.reshape(-1)[0]))
    if zero_point.shape != scale.shape and zero_point.size == scale.size:
        zero_point = zero_point.reshape(scale.shape)
    axis = optional(entry, "axis", int, where)
    block_size = optional(entry, "block_size", int, where)
    if block_size is not None:
        granularity, channel_axis, block_axis = "per_block", None, axis if axis is not None else 1
        if scale.ndim != 2:
            raise ConfigError(f"{where}: per-block 'y_scale' must be a list of lists (channels × blocks)")
    elif scale.ndim == 0 or (scale.size == 1 and axis is None):
        granularity, channel_axis, block_axis = "per_tensor", None, None
    else:
        granularity, channel_axis, block_axis = "per_channel", axis if axis is not None else 0, None
    offset = -zero_point if unsigned else -(2 ** (bitwidth - 1)) - zero_point
    record = EncodingRecord(
        name=name,
        dtype="int",
        bitwidth=bitwidth,
        symmetric=(not unsigned) and bool(np.all(zero_point == 0)),
        granularity=granularity,  # type: ignore[arg-type]
        scale=scale.astype(np.float32).reshape(scale.shape or (1,)),
        offset=offset.astype(np.float64).reshape(scale.shape or (1,)),
        axis=channel_axis,
        block_size=block_size,
        block_axis=block_axis,
    )
    check_offsets(record, where)
    return record


def read(data: dict[str, Any], where: str) -> EncodingsDoc:
    activations: dict[str, EncodingRecord] = {}
    params: dict[str, EncodingRecord] = {}
    sections = [("encodings", activations)]
    sections += [("activation_encodings", activations), ("param_encodings", params)]
    for key, target in sections:
        for i, entry in enumerate(optional(data, key, list, where, [])):
            record = read_entry(entry, f"{where}, {key}[{i}]")
            if record.name in activations or record.name in params:
                raise ConfigError(f"{where}, {key}[{i}]: tensor {record.name!r} has two encodings; keep one")
            target[record.name] = record
    return EncodingsDoc(
        version=VERSION,
        activations=activations,
        params=params,
        quantizer_args=dict(optional(data, "quantizer_args", dict, where, {})),
        excluded_layers=list(optional(data, "excluded_layers", list, where, [])),
        producer=dict(optional(data, "producer", dict, where, {})),
    )


FORMAT = register_format(EncodingFormat(VERSION, write, read))
