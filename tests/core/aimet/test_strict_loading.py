"""aimet-onnx 2.42 loads lowbit's encodings in strict mode, and its simulation reproduces lowbit's.

Oracle: AIMET's own ``load_encodings_to_sim(sim, path, strict=True)``, which raises when an
encodings file does not match the quantizers AIMET places for the same model and config. Both
sides use the same config file, read from the aimet-onnx wheel.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from core.export.runtime import compare_outputs
from core.graph import prepare_model
from core.io import load_data, load_model
from core.ptq.bn_fold import fold_all_batch_norms
from core.quantsim import QuantSim


def _mobilenet_v2_block() -> nn.Module:
    """Inverted residual with ReLU6 (exported as Clip) — the pattern AIMET's strict mode rejected."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1),
        nn.BatchNorm2d(16),
        nn.ReLU6(),
        nn.Conv2d(16, 16, 3, 1, 1, groups=16),
        nn.BatchNorm2d(16),
        nn.ReLU6(),
        nn.Conv2d(16, 8, 1),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    ).eval()


def _aimet_outputs(aimet, sim_dir, config, inputs: np.ndarray) -> np.ndarray:
    model = onnx.load(sim_dir / "model.onnx")
    asim = aimet.QuantizationSimModel(
        model, config_file=str(config), param_type="int8", activation_type="int8"
    )
    mismatches = aimet.load(asim, str(sim_dir / "model.encodings"), strict=True)
    assert mismatches == []
    name = asim.session.get_inputs()[0].name
    return asim.session.run(None, {name: inputs.astype(np.float32)})[0]


CASES = [
    ("onnx", "default_config_per_channel.json", "1.0.0", False),
    ("pt2", "htp_quantsim_config_v73.json", "2.0.0", True),
]


@pytest.mark.parametrize(
    ("source", "config", "version", "fold"), CASES, ids=[f"{c[0]}-{c[1][:-5]}-{c[2]}" for c in CASES]
)
def test_aimet_strict_loads_the_digits_example(
    aimet, digits_artifacts, tmp_path, source, config, version, fold
):
    loaded = load_model(digits_artifacts.model_onnx if source == "onnx" else digits_artifacts.model_pt2)
    calib = load_data(digits_artifacts.calib_data, loaded.input_names).for_model(loaded)
    eval_x = np.load(digits_artifacts.eval_data)["input"][:300]
    cfg = aimet.configs / config
    if fold:  # AIMET's flow for HTP: BN folded into the weights before simulation
        example = tuple(loaded.example_inputs)
        gm = prepare_model(loaded.graph_source, example)
        fold_all_batch_norms(gm)
        sim = QuantSim(gm, example, config=cfg, prepared=True)
    else:
        sim = QuantSim(loaded, config=cfg)
    sim.compute_encodings(calib)
    sim.export(tmp_path, encoding_version=version)
    theirs = _aimet_outputs(aimet, tmp_path, cfg, eval_x)
    with torch.no_grad():
        ours = sim(torch.from_numpy(eval_x)).numpy()
    agreement = compare_outputs(ours, theirs)
    assert agreement["top1_agreement"] == 1.0 and agreement["sqnr_db"] >= 35.0, agreement


@pytest.mark.parametrize("config", ["htp_quantsim_config_v81.json", "default_config.json"])
def test_aimet_strict_loads_conv_relu6_as_clip(aimet, tmp_path, config):
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    gm = prepare_model(_mobilenet_v2_block(), (x[:1],))
    fold_all_batch_norms(gm)
    cfg = aimet.configs / config
    sim = QuantSim(gm, (x[:1],), config=cfg, prepared=True)
    sim.compute_encodings([x])
    sim.export(tmp_path, encoding_version="2.0.0")
    theirs = _aimet_outputs(aimet, tmp_path, cfg, x.numpy())
    with torch.no_grad():
        ours = sim(x).numpy()
    agreement = compare_outputs(ours, theirs)
    assert agreement["top1_agreement"] == 1.0 and agreement["sqnr_db"] >= 35.0, agreement
