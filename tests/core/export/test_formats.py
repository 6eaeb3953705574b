"""Encodings files: golden AIMET files parse, every version round-trips every encoding kind, bad files fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ConfigError
from core.export import ENCODING_VERSIONS, EncodingRecord, EncodingsDoc, parse_encodings, read_encodings_file
from core.export.reader import encodings_json, write_encodings_file
from core.quant.encoding import Encoding, QuantSpec

GOLDEN_DIR = Path("/work/shared/formats")
GOLDEN = sorted(GOLDEN_DIR.glob("*.encodings")) if GOLDEN_DIR.is_dir() else []


def _encodings() -> dict[str, tuple[Encoding, tuple[int, ...] | None]]:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 8, 3, 3, generator=gen)
    act = Encoding.from_min_max(torch.tensor([-1.3]), torch.tensor([2.7]), bitwidth=8, symmetric=False)
    per_channel = QuantSpec(bitwidth=8, symmetric=True, granularity="per_channel", axis=0)
    pc = Encoding.from_min_max(
        w.amin((1, 2, 3)), w.amax((1, 2, 3)), bitwidth=8, symmetric=True, spec=per_channel
    )
    block_spec = QuantSpec(bitwidth=4, symmetric=True, granularity="per_block", axis=0, block_size=4)
    blocks = w.reshape(4, 2, 4, 9).abs().amax((2, 3)).reshape(-1)
    pb = Encoding.from_min_max(-blocks, blocks, bitwidth=4, symmetric=True, spec=block_spec)
    a16 = Encoding.from_min_max(torch.tensor([0.0]), torch.tensor([6.0]), bitwidth=16, symmetric=False)
    return {
        "/relu/Relu_output_0": (act, None),
        "/act16/Relu_output_0": (a16, None),
        "/fp16/Add_output_0": (Encoding.float16(), None),
        "conv.weight": (pc, tuple(w.shape)),
        "block.weight": (pb, tuple(w.shape)),
    }


def _doc(include_blocks: bool = True) -> EncodingsDoc:
    acts, params = {}, {}
    for name, (enc, shape) in _encodings().items():
        if not include_blocks and enc.spec.granularity == "per_block":
            continue
        target = params if name.endswith(".weight") else acts
        target[name] = EncodingRecord.from_encoding(name, enc, shape)
    args = {
        "activation_bitwidth": 8,
        "param_bitwidth": 8,
        "is_symmetric": True,
        "quant_scheme": "post_training_tf",
    }
    return EncodingsDoc(version="", activations=acts, params=params, quantizer_args=args)


@pytest.mark.parametrize("version", ENCODING_VERSIONS)
def test_every_version_round_trips_bit_exactly(version: str, tmp_path: Path) -> None:
    """Given encodings of every kind, when written and read back, scales/offsets/specs are identical."""
    blocks = version != "0.6.1"
    path = write_encodings_file(_doc(include_blocks=blocks), tmp_path / "m.encodings", version)
    doc = read_encodings_file(path)
    assert doc.version == version
    for name, (enc, _) in _encodings().items():
        if not blocks and enc.spec.granularity == "per_block":
            continue
        record = doc.get(name)
        assert record is not None, name
        back = record.to_encoding(enc.spec)
        assert back.equals(enc), (name, back, enc)


def test_0_6_1_refuses_per_block_and_names_the_tensor(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"block\.weight.*1\.0\.0"):
        write_encodings_file(_doc(), tmp_path / "m.encodings", "0.6.1")


def test_layouts_follow_aimet_conventions() -> None:
    doc = _doc(include_blocks=True)
    v061 = encodings_json(_doc(include_blocks=False), "0.6.1")
    conv = v061["param_encodings"]["conv.weight"]
    assert isinstance(conv, list) and len(conv) == 4  # one dict per output channel
    assert conv[0]["is_symmetric"] == "True" and conv[0]["offset"] == -128 and conv[0]["dtype"] == "int"
    assert conv[0]["min"] == pytest.approx(-128 * conv[0]["scale"])
    assert v061["activation_encodings"]["/fp16/Add_output_0"] == [{"bitwidth": 16, "dtype": "float"}]
    assert v061["quantizer_args"]["is_symmetric"] == "True"

    v1 = encodings_json(doc, "1.0.0")
    entries = {e["name"]: e for e in v1["param_encodings"] + v1["activation_encodings"]}
    assert entries["conv.weight"]["enc_type"] == "PER_CHANNEL" and entries["conv.weight"]["is_sym"] is True
    assert entries["block.weight"]["enc_type"] == "PER_BLOCK" and entries["block.weight"]["block_size"] == 4
    assert len(entries["block.weight"]["scale"]) == 4 * 2
    assert entries["/fp16/Add_output_0"] == {
        "name": "/fp16/Add_output_0",
        "enc_type": "PER_TENSOR",
        "dtype": "FLOAT",
        "bw": 16,
    }
    act = entries["/relu/Relu_output_0"]
    assert act["offset"][0] <= 0 and act["is_sym"] is False

    v2 = {e["name"]: e for e in encodings_json(doc, "2.0.0")["encodings"]}
    assert v2["conv.weight"]["output_dtype"] == "int8" and v2["conv.weight"]["axis"] == 0
    assert v2["conv.weight"]["y_zero_point"] == [0, 0, 0, 0]
    assert v2["/relu/Relu_output_0"]["output_dtype"] == "uint8"
    assert v2["/relu/Relu_output_0"]["y_zero_point"] == -act["offset"][0]
    assert v2["/act16/Relu_output_0"]["output_dtype"] == "uint16"
    block = v2["block.weight"]
    assert block["output_dtype"] == "int4" and block["axis"] == 1 and block["block_size"] == 4
    assert np.asarray(block["y_scale"]).shape == (4, 2)


@pytest.mark.skipif(not GOLDEN, reason="shared/formats golden files not present")
@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_golden_aimet_files_parse(path: Path) -> None:
    raw = json.loads(path.read_text())
    doc = read_encodings_file(path)
    assert doc.version == raw["version"]
    assert len(doc.activations) == len(raw["activation_encodings"])
    assert len(doc.params) == len(raw["param_encodings"])
    for entry in raw["param_encodings"]:
        record = doc.params[entry["name"]]
        assert record.granularity == "per_channel" and record.symmetric
        assert record.scale.tolist() == pytest.approx(entry["scale"])
        assert set(record.offset.tolist()) == {-128.0}
    # Encodings read from AIMET's file are usable engine encodings.
    enc = doc.params["conv1.weight"].to_encoding()
    assert enc.scale.numel() == 16 and bool((enc.min < 0).all())


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "bad.encodings"
    path.write_text(json.dumps(data))
    return path


def _v1(entry: dict) -> dict:
    return {"version": "1.0.0", "activation_encodings": [entry], "param_encodings": []}


GOOD_ENTRY = {
    "name": "t",
    "enc_type": "PER_TENSOR",
    "dtype": "INT",
    "bw": 8,
    "is_sym": False,
    "scale": [0.1],
    "offset": [-3],
}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"version": "3.1.4", "activation_encodings": []},
            r"unknown encodings version '3\.1\.4'.*0\.6\.1, 1\.0\.0, 2\.0\.0",
        ),
        ([1, 2], r"JSON object"),
        ({"foo": 1}, r"not an encodings file"),
        (
            _v1({k: v for k, v in GOOD_ENTRY.items() if k != "scale"}),
            r"activation_encodings\[0\].*missing key 'scale'",
        ),
        (_v1({**GOOD_ENTRY, "bw": "8"}), r"key 'bw': expected an integer"),
        (_v1({**GOOD_ENTRY, "offset": [3]}), r"offsets outside"),
        (_v1({**GOOD_ENTRY, "scale": [0.0]}), r"positive finite scales"),
        (
            _v1({**GOOD_ENTRY, "enc_type": "VECTOR"}),
            r"enc_type 'VECTOR' not supported; choose one of PER_TENSOR",
        ),
        (_v1({**GOOD_ENTRY, "scale": [0.1, 0.2]}), r"PER_TENSOR entries hold exactly one scale"),
        (_v1({**GOOD_ENTRY, "dtype": "BF16"}), r"dtype 'BF16' not accepted"),
        (
            {"version": "2.0.0", "encodings": [{"name": "t", "output_dtype": "int64", "y_scale": 0.1}]},
            r"output_dtype 'int64'",
        ),
        (
            {"version": "0.6.1", "activation_encodings": {"t": [{"bitwidth": 8, "is_symmetric": "maybe"}]}},
            r"'True' or 'False'",
        ),
    ],
)
def test_malformed_files_fail_with_file_key_and_accepted_values(
    tmp_path: Path, data: object, message: str
) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=message) as info:
        read_encodings_file(path)
    assert str(path) in str(info.value)


def test_missing_and_non_json_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_encodings_file(tmp_path / "nope.encodings")
    bad = tmp_path / "x.encodings"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_encodings_file(bad)


def test_versionless_param_only_file_reads_as_0_6_1() -> None:
    """AdaRound-style files carry only param_encodings (0.6.1 dict layout) and no version."""
    data = {
        "param_encodings": {
            "fc.weight": [{"bitwidth": 4, "is_symmetric": "True", "offset": -8, "scale": 0.01}]
        }
    }
    doc = parse_encodings(data)
    assert doc.version == "0.6.1" and doc.params["fc.weight"].bitwidth == 4
