"""Quantsim config: presets, AIMET's own file as AIMET writes it, and clear errors for every bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest

from core.errors import ConfigError, ConfigWarning
from core.quantsim import load_config, parse_config, preset_names

# Written the way AIMET's default_config.json is (shared/AIMET-REFERENCE.md §1.4): string booleans,
# an empty model_output, ONNX op-type names, tabs and all.
AIMET_DEFAULT_CONFIG = """{
\t"defaults":
\t{
\t\t"ops":
\t\t{
\t\t\t"is_output_quantized": "True"
\t\t},
\t\t"params":
\t\t{
\t\t\t"is_quantized": "True",
\t\t\t"is_symmetric": "True"
\t\t},
\t\t"strict_symmetric": "False",
\t\t"unsigned_symmetric": "True",
\t\t"per_channel_quantization": "False"
\t},
\t"params":
\t{
\t\t"bias":
\t\t{
\t\t\t"is_quantized": "False"
\t\t}
\t},
\t"op_type":
\t{
\t\t"Squeeze": {"is_output_quantized": "False"},
\t\t"Pad": {"is_output_quantized": "False"},
\t\t"Mean": {"is_output_quantized": "False"},
\t\t"Cast": {"is_output_quantized": "False"},
\t\t"Dropout": {"is_output_quantized": "False"},
\t\t"Expand": {"is_output_quantized": "False"},
\t\t"Gather": {"is_output_quantized": "False"}
\t},
\t"supergroups":
\t[
\t\t{"op_list": ["Conv", "Relu"]},
\t\t{"op_list": ["ConvTranspose", "Relu"]},
\t\t{"op_list": ["Conv", "Clip"]},
\t\t{"op_list": ["Add", "Relu"]},
\t\t{"op_list": ["Gemm", "Relu"]}
\t],
\t"model_input":
\t{
\t\t"is_input_quantized": "True"
\t},
\t"model_output":
\t{}
}
"""


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_parses(name):
    cfg = load_config(name)
    assert cfg.params_quantized and cfg.params_symmetric
    assert cfg.param_rule("Conv", "bias").is_quantized is False
    if name != "qnn_htp":  # AIMET's HTP file as shipped: it leaves Dropout to the defaults
        assert cfg.op_rule("Dropout").is_output_quantized is False
    assert cfg.op_rule("Conv").is_output_quantized is True
    assert ("Conv", "Relu") in cfg.supergroups
    assert cfg.model_input_quantized is True


def test_presets_include_default_and_htp():
    assert {"default", "htp_v73", "onnxruntime_cpu"} <= set(preset_names())
    htp = load_config("htp_v73")
    assert htp.op_rule("Softmax").encoding_constraints == (0.0, 1.0)
    assert htp.op_rule("Gemm").per_channel_quantization is False
    assert htp.op_rule("Conv").per_channel_quantization is True
    assert htp.hw_version == "V73"


def test_aimet_default_config_file_as_aimet_writes_it(tmp_path):
    path = tmp_path / "default_config.json"
    path.write_text(AIMET_DEFAULT_CONFIG)
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert cfg.ops_output_quantized is True and cfg.ops_symmetric is False
    assert cfg.per_channel_quantization is False
    assert cfg.unsigned_symmetric is True and cfg.strict_symmetric is False
    assert cfg.param_rule("Conv", "weight").is_quantized is True
    assert cfg.param_rule("Conv", "weight").is_symmetric is True
    assert cfg.param_rule("Gemm", "bias").is_quantized is False
    for op in ("Squeeze", "Pad", "Mean", "Cast", "Dropout", "Expand", "Gather"):
        assert cfg.op_rule(op).is_output_quantized is False
    assert cfg.op_rule("Relu").is_output_quantized is True
    assert cfg.supergroups == (
        ("Conv", "Relu"),
        ("ConvTranspose", "Relu"),
        ("Conv", "Clip"),
        ("Add", "Relu"),
        ("Gemm", "Relu"),
    )
    assert cfg.model_input_quantized is True and cfg.model_output_quantized is None


def test_json_booleans_and_op_params_precedence():
    raw = json.loads(AIMET_DEFAULT_CONFIG)
    raw["defaults"]["per_channel_quantization"] = True
    raw["op_type"]["Conv"] = {"params": {"weight": {"is_symmetric": "False"}}}
    raw["params"]["weight"] = {"is_symmetric": "True", "is_quantized": "True"}
    cfg = parse_config(raw)
    assert cfg.per_channel_quantization is True
    assert cfg.param_rule("Conv", "weight").is_symmetric is False  # op_type.params beats params
    assert cfg.param_rule("Gemm", "weight").is_symmetric is True


def _mutated(edit):
    raw = json.loads(AIMET_DEFAULT_CONFIG)
    edit(raw)
    return raw


BAD_CONFIGS = [
    ("missing key", lambda r: r.pop("supergroups"), ["supergroups", "defaults, params, op_type"]),
    ("bad boolean", lambda r: r["defaults"]["params"].__setitem__("is_symmetric", "yes"), ["defaults.params.is_symmetric", "'True'/'False'"]),
    ("bad op boolean", lambda r: r["op_type"]["Pad"].__setitem__("is_output_quantized", 1), ["op_type.Pad.is_output_quantized", "'True'/'False'"]),
    ("bad model input", lambda r: r["model_input"].__setitem__("is_input_quantized", "maybe"), ["model_input.is_input_quantized"]),
    ("supergroups not a list", lambda r: r.__setitem__("supergroups", 5), ["supergroups", "list"]),
    ("supergroups an object", lambda r: r.__setitem__("supergroups", {"op_list": ["Conv", "Relu"]}), ["supergroups", "list"]),
    ("supergroup too short", lambda r: r["supergroups"].append({"op_list": ["Conv"]}), ["supergroups[5].op_list", "at least two"]),
    ("supergroup not strings", lambda r: r["supergroups"].append({"op_list": ["Conv", 3]}), ["supergroups[5].op_list"]),
    ("supergroup not object", lambda r: r["supergroups"].append("Conv+Relu"), ["supergroups[5]", "object"]),
    ("kernels not a list", lambda r: r["defaults"].__setitem__("supported_kernels", 8), ["defaults.supported_kernels", "list"]),
    ("op kernels not a list", lambda r: r["op_type"]["Pad"].__setitem__("supported_kernels", "int8"), ["op_type.Pad.supported_kernels", "list"]),
    ("constraints reversed", lambda r: r["op_type"].__setitem__("Softmax", {"encoding_constraints": {"min": 1, "max": 0}}), ["Softmax.encoding_constraints", "below"]),
    ("constraints without min", lambda r: r["op_type"].__setitem__("Softmax", {"encoding_constraints": {"max": 1}}), ["Softmax.encoding_constraints", "'min'"]),
    ("pass list not a list", lambda r: r.__setitem__("supergroup_pass_list", "MatmulAdd"), ["supergroup_pass_list", "MatmulAdd"]),
    ("target bias mode", lambda r: r.__setitem__("target", {"bias": "int16"}), ["target.bias", "float, int32"]),
    ("target weight bits", lambda r: r.__setitem__("target", {"max_weight_bits": 1}), ["target.max_weight_bits", "2..16"]),
    ("target decomposed mode", lambda r: r.__setitem__("target", {"decomposed_ops": "float"}), ["target.decomposed_ops", "per_node, fused"]),
    ("target unknown key", lambda r: r.__setitem__("target", {"reduce": True}), ["target", "reduce", "max_weight_bits"]),
    ("params not object", lambda r: r.__setitem__("params", ["bias"]), ["params", "object"]),
    ("overrides not list", lambda r: r.__setitem__("overrides", {"pattern": "x"}), ["overrides", "list"]),
    ("override without pattern", lambda r: r.__setitem__("overrides", [{"param_bw": 4}]), ["overrides[0]", "pattern"]),
    ("override unknown key", lambda r: r.__setitem__("overrides", [{"pattern": "x", "bw": 4}]), ["overrides[0]", "bw", "param_bw"]),
    ("override bad bitwidth", lambda r: r.__setitem__("overrides", [{"pattern": "x", "param_bw": 33}]), ["overrides[0].param_bw", "2..16"]),
    ("override bitwidth string", lambda r: r.__setitem__("overrides", [{"pattern": "x", "output_bw": "8"}]), ["overrides[0].output_bw", "integer"]),
    ("override bad dtype", lambda r: r.__setitem__("overrides", [{"pattern": "x", "act_dtype": "fp8"}]), ["overrides[0].act_dtype", "int, float, auto"]),
    ("override bad scheme", lambda r: r.__setitem__("overrides", [{"pattern": "x", "act_scheme": "entropy"}]), ["overrides[0].act_scheme", "min_max", "sqnr"]),
    ("override bad block", lambda r: r.__setitem__("overrides", [{"pattern": "x", "block_size": 0}]), ["overrides[0].block_size", "positive"]),
    ("override bad boolean", lambda r: r.__setitem__("overrides", [{"pattern": "x", "enabled": "nope"}]), ["overrides[0].enabled", "'True'/'False'"]),
]  # fmt: skip


@pytest.mark.parametrize(("label", "edit", "fragments"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_malformed_configs_raise_config_errors_naming_key_and_choices(label, edit, fragments):
    with pytest.raises(ConfigError) as info:
        parse_config(_mutated(edit))
    for fragment in fragments:
        assert fragment in str(info.value), (label, str(info.value))


UNKNOWN_AIMET_KEYS = [
    ("top key", lambda r: r.__setitem__("extras", {}), ["extras", "lowbit reads", "supergroups"]),
    ("defaults key", lambda r: r["defaults"].__setitem__("foo", 1), ["defaults", "foo", "hw_version"]),
    ("op key", lambda r: r["op_type"]["Pad"].__setitem__("is_quantised", "True"), ["op_type.Pad", "is_quantised", "is_output_quantized"]),
    ("model output key", lambda r: r["model_output"].__setitem__("quantized", "True"), ["model_output", "is_output_quantized"]),
    ("supergroup key", lambda r: r["supergroups"].append({"op_list": ["Conv", "Relu"], "ops": []}), ["supergroups[5]", "ops", "op_list"]),
    ("pass name", lambda r: r.__setitem__("supergroup_pass_list", ["MatmulAdd", "ConvGelu"]), ["supergroup_pass_list", "ConvGelu", "MatmulAdd"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "edit", "fragments"), UNKNOWN_AIMET_KEYS, ids=[c[0] for c in UNKNOWN_AIMET_KEYS]
)
def test_unknown_aimet_keys_are_warnings_naming_the_key(label, edit, fragments):
    """AIMET's format grows with its releases: lowbit names what it reads past and loads the rest."""
    with pytest.warns(ConfigWarning) as record:
        cfg = parse_config(_mutated(edit))
    message = " ".join(str(w.message) for w in record)
    for fragment in fragments:
        assert fragment in message, (label, message)
    assert cfg.op_rule("Conv").is_output_quantized is True


def test_pass_list_and_one_sided_constraints_are_honoured():
    raw = _mutated(lambda r: r.__setitem__("supergroup_pass_list", ["LayerNormalization", "MatmulAdd"]))
    raw["op_type"]["Relu"] = {"encoding_constraints": {"min": 0.0}}
    cfg = parse_config(raw)
    assert cfg.supergroup_passes == ("LayerNormalization", "MatmulAdd")
    # MatmulAdd fuses only a constant-weight MatMul with its constant bias vector (placement's
    # _matmul_add_biases, as aimet-onnx's pass): no generic chain, so attention's Q·Kᵀ + mask keeps
    # the MatMul's output quantizer.
    assert ("MatMul", "Add") not in cfg.supergroups
    assert cfg.op_rule("Relu").encoding_constraints == (0.0, None)


def test_bad_sources(tmp_path):
    with pytest.raises(ConfigError, match=r"neither a preset .*default.* nor a readable JSON file"):
        load_config("no_such_preset")
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(ConfigError, match="expected an object"):
        load_config(listed)


def test_overrides_append_and_keep_the_rest():
    base = load_config("default")
    extended = base.with_overrides([{"pattern": "fc*", "param_bw": 4, "act_scheme": "tf_enhanced"}])
    assert len(extended.overrides) == len(base.overrides) + 1
    assert extended.overrides[-1].act_scheme == "sqnr"  # aliases are resolved
    assert dataclasses.replace(extended, overrides=base.overrides) == base
