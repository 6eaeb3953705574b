"""load_encodings: strict/non-strict matching, freezing, and clear errors for files that do not fit the sim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core.errors import ConfigError
from core.export import export_sim, load_encodings
from core.quantsim import QuantSim
from examples.digits.model import DigitsCNN

X = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[QuantSim, dict]:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    sim = QuantSim(model, (X,))
    sim.compute_encodings([X])
    result = export_sim(sim, tmp_path_factory.mktemp("export"), encoding_version="1.0.0", qdq=False)
    return sim, json.loads(result.encodings.read_text())


def _fresh(sim: QuantSim) -> QuantSim:
    return QuantSim(sim.fp_model, (X,), prepared=True)


def test_loads_from_a_dict_and_freezes(exported) -> None:
    sim, data = exported
    fresh = _fresh(sim)
    keys = load_encodings(fresh, data, freeze=True)
    assert set(keys) == {k for k, q in sim.quantizers().items() if q.enabled}
    assert all(fresh.quantizers()[k].frozen for k in keys)
    before = fresh(X)
    fresh.compute_encodings([X * 3])  # frozen quantizers keep the loaded encodings
    assert torch.equal(fresh(X), before)
    assert torch.equal(before, sim(X))


def test_strict_reports_unknown_names_and_missing_quantizers(exported) -> None:
    sim, data = exported
    extra = json.loads(json.dumps(data))
    extra["activation_encodings"].append({**extra["activation_encodings"][0], "name": "/ghost/Relu_output_0"})
    with pytest.raises(ConfigError, match=r"match no quantizer.*/ghost/Relu_output_0"):
        load_encodings(_fresh(sim), extra)
    partial = json.loads(json.dumps(data))
    partial["activation_encodings"] = [
        e for e in partial["activation_encodings"] if e["name"] != "/relu2/Relu_output_0"
    ]
    with pytest.raises(ConfigError, match=r"no encoding for quantizers relu2\.output\.0"):
        load_encodings(_fresh(sim), partial)
    fresh = _fresh(sim)
    keys = load_encodings(fresh, partial, strict=False)
    assert "relu2.output.0" not in keys and "relu1.output.0" in keys
    assert fresh.quantizers()["relu2.output.0"].encoding is None


def test_channel_count_mismatch_names_tensor_and_shape(exported, tmp_path: Path) -> None:
    sim, data = exported
    bad = json.loads(json.dumps(data))
    conv1 = next(e for e in bad["param_encodings"] if e["name"] == "conv1.weight")
    conv1["scale"], conv1["offset"] = conv1["scale"][:3], conv1["offset"][:3]
    path = tmp_path / "bad.encodings"
    path.write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"bad\.encodings.*conv1\.weight.*3 scale.*needs 16"):
        load_encodings(_fresh(sim), path)


def test_aimet_golden_file_loads_into_a_sim_of_the_same_model() -> None:
    """AIMET's file for the digits CNN (ONNX names from its onnx export) loads non-strictly: its weights match."""
    golden = Path("/work/shared/formats/aimet-2.42-sim-export-1.0.0.encodings")
    if not golden.is_file():
        pytest.skip("golden file not present")
    sim = QuantSim(DigitsCNN().eval(), (X,))
    keys = load_encodings(sim, golden, strict=False)
    assert {"conv1.param.weight", "conv2.param.weight", "conv3.param.weight", "fc.param.weight"} <= set(keys)
    assert {"relu1.output.0", "relu2.output.0", "relu3.output.0", "pool.output.0"} <= set(keys)
    data = json.loads(golden.read_text())
    conv1 = next(e for e in data["param_encodings"] if e["name"] == "conv1.weight")
    enc = sim.quantizers()["conv1.param.weight"].encoding
    assert enc is not None and enc.scale.tolist() == pytest.approx(conv1["scale"])
