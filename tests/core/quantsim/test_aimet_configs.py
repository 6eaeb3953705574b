"""AIMET's own quantsim config files, as the installed aimet-onnx wheel ships them, load unchanged.

The files are read from the wheel (never copied into this repository); what each says is checked
against lowbit's parsed config key by key, with the JSON itself as the oracle.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import pytest

from core.quantsim import load_config
from core.quantsim.config import SUPERGROUP_PASSES


def _aimet_config_dir() -> Path:
    # find_spec locates the package without importing it (aimet_onnx's import takes seconds).
    spec = importlib.util.find_spec("aimet_onnx")
    assert spec is not None and spec.submodule_search_locations, (
        "aimet-onnx is installed by the 'aimet' extra"
    )
    return Path(next(iter(spec.submodule_search_locations))) / "common" / "quantsim_config"


AIMET_CONFIGS = sorted(_aimet_config_dir().glob("*.json"))


def _flag(value: str) -> bool:
    return value.strip().lower() == "true"


def test_the_wheel_ships_the_nineteen_files():
    names = {p.name for p in AIMET_CONFIGS}
    assert len(names) == 19, names
    assert {"default_config.json", "htp_quantsim_config_v81.json", "enpu_quantsim_config_v7.json"} <= names


@pytest.mark.parametrize("path", AIMET_CONFIGS, ids=[p.stem for p in AIMET_CONFIGS])
def test_every_shipped_config_loads_and_means_what_it_says(path):
    raw = json.loads(path.read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing in AIMET's own files is read past
        cfg = load_config(path)
    defaults = raw["defaults"]
    assert cfg.hw_version == defaults.get("hw_version")
    assert cfg.per_channel_quantization == _flag(defaults.get("per_channel_quantization", "False"))
    assert cfg.params_symmetric == _flag(defaults["params"].get("is_symmetric", "True"))
    for op, rule in raw["op_type"].items():
        got = cfg.op_rule(op)
        if "per_channel_quantization" in rule:
            assert got.per_channel_quantization == _flag(rule["per_channel_quantization"]), op
        if "is_output_quantized" in rule:
            assert got.is_output_quantized == _flag(rule["is_output_quantized"]), op
        if "is_input_quantized" in rule:
            assert got.is_input_quantized == _flag(rule["is_input_quantized"]), op
        if "encoding_constraints" in rule:
            c = rule["encoding_constraints"]
            assert got.encoding_constraints == (c["min"], c.get("max")), op
        for pname, prule in rule.get("params", {}).items():
            if "is_quantized" in prule:
                assert cfg.param_rule(op, pname).is_quantized == _flag(prule["is_quantized"]), (op, pname)
            if "is_symmetric" in prule:
                assert cfg.param_rule(op, pname).is_symmetric == _flag(prule["is_symmetric"]), (op, pname)
        if "supported_kernels" in rule:
            assert list(got.supported_kernels) == rule["supported_kernels"], op
    passes = raw.get("supergroup_pass_list", [])
    assert cfg.supergroup_passes == tuple(passes)
    for group in raw["supergroups"]:
        assert tuple(group["op_list"]) in cfg.supergroups
    for name in passes:
        if SUPERGROUP_PASSES[name] is not None:
            assert SUPERGROUP_PASSES[name] in cfg.supergroups
    assert cfg.model_input_quantized == _flag(raw["model_input"].get("is_input_quantized", "False"))


def test_qnn_htp_preset_is_aimets_htp_v73_config():
    """The qnn_htp preset is AIMET's htp_quantsim_config_v73.json plus lowbit's target arithmetic."""
    preset = json.loads(_preset_path("qnn_htp").read_text())
    aimet = json.loads((_aimet_config_dir() / "htp_quantsim_config_v73.json").read_text())
    assert {k: v for k, v in preset.items() if k not in ("name", "description", "target")} == aimet
    assert load_config("qnn_htp").target.bias_int32


def _preset_path(name: str) -> Path:
    import core.quantsim.presets as presets

    return Path(presets.__file__).parent / f"{name}.json"
