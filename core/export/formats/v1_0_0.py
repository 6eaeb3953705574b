"""AIMET encodings format 1.0.0: lists of entries with ``name``; per-channel scales in one entry.

::

    {"version": "1.0.0",
     "activation_encodings": [{"name": "/relu1/Relu_output_0", "enc_type": "PER_TENSOR", "dtype": "INT",
                               "bw": 8, "is_sym": false, "scale": [0.0137], "offset": [0]}],
     "param_encodings": [{"name": "conv1.weight", "enc_type": "PER_CHANNEL", ..., "offset": [-128, ...]}],
     "excluded_layers": [], "quantizer_args": {...}, "producer": {...}}

Per-block entries add ``block_size`` and flatten (channels × blocks) scales channel-major.
Float16 entries are ``{"name", "enc_type": "PER_TENSOR", "dtype": "FLOAT", "bw": 16}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.errors import ConfigError
from core.export.formats import EncodingFormat, register_format
from core.export.formats.fields import check_type, number_list, optional, require
from core.export.records import EncodingRecord, EncodingsDoc, check_offsets

VERSION = "1.0.0"
_ENC_TYPES = {"per_tensor": "PER_TENSOR", "per_channel": "PER_CHANNEL", "per_block": "PER_BLOCK"}
_GRANULARITY = {v: k for k, v in _ENC_TYPES.items()}


def entry_dict(record: EncodingRecord) -> dict[str, Any]:
    """The 1.0.0 dict of one record (shared with writers that embed 1.0.0 entries)."""
    if record.dtype == "float":
        return {"name": record.name, "enc_type": "PER_TENSOR", "dtype": "FLOAT", "bw": record.bitwidth}
    entry: dict[str, Any] = {
        "name": record.name,
        "enc_type": _ENC_TYPES[record.granularity],
        "dtype": "INT",
        "bw": record.bitwidth,
        "is_sym": bool(record.symmetric),
        "scale": [float(s) for s in np.asarray(record.scale, np.float32).reshape(-1)],
        "offset": [int(o) for o in np.asarray(record.offset).reshape(-1)],
    }
    if record.granularity == "per_block":
        entry["block_size"] = int(record.block_size or 0)
    return entry


def write(doc: EncodingsDoc) -> dict[str, Any]:
    return {
        "version": VERSION,
        "activation_encodings": [entry_dict(r) for r in doc.activations.values()],
        "param_encodings": [entry_dict(r) for r in doc.params.values()],
        "excluded_layers": list(doc.excluded_layers),
        "quantizer_args": dict(doc.quantizer_args),
        "producer": dict(doc.producer),
    }


def read_entry(entry: Any, where: str) -> EncodingRecord:
    check_type(entry, dict, where)
    name = require(entry, "name", str, where)
    where = f"{where} ({name!r})"
    dtype = require(entry, "dtype", str, where).upper()
    if dtype not in ("INT", "FLOAT"):
        raise ConfigError(f"{where}: dtype {dtype!r} not accepted; choose 'INT' or 'FLOAT'")
    bitwidth = require(entry, "bw", int, where)
    enc_type = str(optional(entry, "enc_type", str, where, "PER_TENSOR")).upper()
    if dtype == "FLOAT":
        return EncodingRecord(name=name, dtype="float", bitwidth=bitwidth)
    if enc_type not in _GRANULARITY:
        raise ConfigError(
            f"{where}: enc_type {enc_type!r} not supported; choose one of {', '.join(_GRANULARITY)}"
        )
    granularity = _GRANULARITY[enc_type]
    block_size = optional(entry, "block_size", int, where)
    if granularity == "per_block" and not block_size:
        raise ConfigError(f"{where}: PER_BLOCK entries need a positive 'block_size'")
    record = EncodingRecord(
        name=name,
        dtype="int",
        bitwidth=bitwidth,
        symmetric=require(entry, "is_sym", bool, where),
        granularity=granularity,  # type: ignore[arg-type]
        scale=np.asarray(
            number_list(require(entry, "scale", (list, float), where), f"{where}, key 'scale'"), np.float32
        ),
        offset=np.asarray(
            number_list(require(entry, "offset", (list, float), where), f"{where}, key 'offset'"), np.float64
        ),
        block_size=block_size if granularity == "per_block" else None,
    )
    if granularity == "per_tensor" and record.num_groups != 1:
        raise ConfigError(f"{where}: PER_TENSOR entries hold exactly one scale, got {record.num_groups}")
    check_offsets(record, where)
    return record


def read_sections(
    data: dict[str, Any], where: str
) -> tuple[dict[str, EncodingRecord], dict[str, EncodingRecord]]:
    out = []
    for key in ("activation_encodings", "param_encodings"):
        section = optional(data, key, list, where, [])
        records: dict[str, EncodingRecord] = {}
        for i, entry in enumerate(section):
            record = read_entry(entry, f"{where}, {key}[{i}]")
            if record.name in records:
                raise ConfigError(f"{where}, {key}[{i}]: tensor {record.name!r} has two encodings; keep one")
            records[record.name] = record
        out.append(records)
    return out[0], out[1]


def read(data: dict[str, Any], where: str) -> EncodingsDoc:
    activations, params = read_sections(data, where)
    return EncodingsDoc(
        version=VERSION,
        activations=activations,
        params=params,
        quantizer_args=dict(optional(data, "quantizer_args", dict, where, {})),
        excluded_layers=list(optional(data, "excluded_layers", list, where, [])),
        producer=dict(optional(data, "producer", dict, where, {})),
    )


FORMAT = register_format(EncodingFormat(VERSION, write, read))
