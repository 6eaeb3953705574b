"""AIMET encodings format 0.6.1: dicts keyed by tensor name, one dict per channel, string booleans.

::

    {"version": "0.6.1",
     "activation_encodings": {"/relu1/Relu_output_0": [{"bitwidth": 8, "dtype": "int",
                               "is_symmetric": "False", "min": 0.0, "max": 3.5, "offset": 0, "scale": 0.0137}]},
     "param_encodings": {"conv1.weight": [{... one dict per output channel ...}]},
     "quantizer_args": {...}, "excluded_layers": []}

Float16 tensors are ``[{"bitwidth": 16, "dtype": "float"}]``. Per-block encodings cannot be
expressed in 0.6.1 and are refused (use 1.0.0 or 2.0.0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.errors import ConfigError
from core.export.formats import EncodingFormat, register_format
from core.export.formats.fields import check_type, optional, require, string_bool
from core.export.records import EncodingRecord, EncodingsDoc, check_offsets

VERSION = "0.6.1"


def _bool_str(value: bool) -> str:
    return "True" if value else "False"


def _entry_dicts(record: EncodingRecord) -> list[dict[str, Any]]:
    if record.dtype == "float":
        return [{"bitwidth": record.bitwidth, "dtype": "float"}]
    if record.granularity == "per_block":
        raise ConfigError(
            f"tensor {record.name!r} has a per-block encoding, which format 0.6.1 cannot express; "
            "export with encoding_version '1.0.0' or '2.0.0'"
        )
    steps = 2**record.bitwidth - 1
    out = []
    for scale, offset in zip(record.scale.reshape(-1), record.offset.reshape(-1), strict=True):
        s = np.float32(scale)
        out.append(
            {
                "bitwidth": record.bitwidth,
                "dtype": "int",
                "is_symmetric": _bool_str(record.symmetric),
                "max": float(np.float32(steps + offset) * s),
                "min": float(np.float32(offset) * s),
                "offset": int(offset),
                "scale": float(s),
            }
        )
    return out


def write(doc: EncodingsDoc) -> dict[str, Any]:
    args = {k: (_bool_str(v) if isinstance(v, bool) else v) for k, v in doc.quantizer_args.items()}
    return {
        "version": VERSION,
        "activation_encodings": {name: _entry_dicts(r) for name, r in doc.activations.items()},
        "param_encodings": {name: _entry_dicts(r) for name, r in doc.params.items()},
        "excluded_layers": list(doc.excluded_layers),
        "quantizer_args": args,
    }


def _read_record(name: str, entries: Any, where: str) -> EncodingRecord:
    check_type(entries, list, where)
    if not entries:
        raise ConfigError(f"{where}: empty encoding list; expected one dict (or one per channel)")
    first = check_type(entries[0], dict, f"{where}[0]")
    dtype = str(optional(first, "dtype", str, where, "int")).lower()
    if dtype not in ("int", "float"):
        raise ConfigError(f"{where}: dtype {dtype!r} not accepted; choose 'int' or 'float'")
    bitwidth = require(first, "bitwidth", int, where)
    if dtype == "float":
        return EncodingRecord(name=name, dtype="float", bitwidth=bitwidth)
    symmetric = string_bool(
        require(first, "is_symmetric", (str, bool), where), f"{where}, key 'is_symmetric'"
    )
    scales, offsets = [], []
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        scales.append(require(entry, "scale", float, at))
        offsets.append(require(entry, "offset", float, at))
        if require(entry, "bitwidth", int, at) != bitwidth:
            raise ConfigError(f"{at}: all channels of one tensor must share a bitwidth")
    record = EncodingRecord(
        name=name,
        dtype="int",
        bitwidth=bitwidth,
        symmetric=symmetric,
        granularity="per_channel" if len(entries) > 1 else "per_tensor",
        scale=np.asarray(scales, np.float32),
        offset=np.asarray(offsets, np.float64),
    )
    check_offsets(record, where)
    return record


def read(data: dict[str, Any], where: str) -> EncodingsDoc:
    sections: dict[str, dict[str, EncodingRecord]] = {}
    for key in ("activation_encodings", "param_encodings"):
        section = optional(data, key, dict, where, {})
        sections[key] = {
            name: _read_record(name, entries, f"{where}, {key}[{name!r}]")
            for name, entries in section.items()
        }
    args = optional(data, "quantizer_args", dict, where, {})
    return EncodingsDoc(
        version=VERSION,
        activations=sections["activation_encodings"],
        params=sections["param_encodings"],
        quantizer_args={k: (string_bool(v, where) if v in ("True", "False") else v) for k, v in args.items()},
        excluded_layers=list(optional(data, "excluded_layers", list, where, [])),
    )


FORMAT = register_format(EncodingFormat(VERSION, write, read))
