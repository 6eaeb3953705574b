"""export_sim: names in the file exist in the ONNX graph, every enabled quantizer has one encoding,
the 1.0.0 layout matches AIMET's golden file, and loading a file back reproduces the sim bit-exactly."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from core.export import ENCODING_VERSIONS, export_sim, read_encodings_file, run_onnx
from core.export.decomposed_ops import decomposed_op_names
from core.quantsim import QuantSim
from examples.digits.model import DigitsCNN
from tests.core.export.sample_nets import ResidualNet, TransformerBlock

GOLDEN = Path("/work/shared/formats/aimet-2.42-sim-export-1.0.0.encodings")


def _calibrated(model: torch.nn.Module, x: torch.Tensor, **kwargs: object) -> QuantSim:
    torch.manual_seed(0)
    sim = QuantSim(model.eval(), (x,), **kwargs)  # type: ignore[arg-type]
    sim.compute_encodings([x])
    return sim


def _graph_tensors(path: Path) -> set[str]:
    graph = onnx.load(path).graph
    names = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    for node in graph.node:
        names.update(node.output)
    return names


CASES = {
    "digits": (DigitsCNN, (16, 1, 8, 8)),
    "residual": (ResidualNet, (8, 3, 8, 8)),
    "transformer": (TransformerBlock, (2, 5, 16)),
}


@pytest.fixture(scope="module", params=list(CASES))
def calibrated_sim(request: pytest.FixtureRequest) -> tuple[QuantSim, torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    factory, shape = CASES[request.param]
    model = factory().eval()
    x = torch.randn(*shape) if request.param != "digits" else torch.rand(*shape)
    return _calibrated(model, x), model, x


def test_every_name_exists_and_every_enabled_quantizer_has_one_encoding(
    calibrated_sim, tmp_path: Path
) -> None:
    sim, _, _ = calibrated_sim
    result = export_sim(sim, tmp_path, encoding_version="1.0.0")
    doc = read_encodings_file(result.encodings)
    tensors = _graph_tensors(result.onnx)
    assert doc.names() <= tensors, doc.names() - tensors
    enabled = [k for k, q in sim.quantizers().items() if q.enabled]
    assert enabled, "the sim has quantizers to export"
    assert set(result.tensor_map) >= set(enabled)
    expected = {result.tensor_map[k] for k in enabled}
    assert doc.names() >= expected
    # Beyond the sim's quantizers, only what aimet-onnx quantizes inside a decomposed op (the
    # transformer's GELU exports as Div/Erf/Add/Mul at opset 17) and nothing else.
    extra = doc.names() - expected
    assert extra == decomposed_op_names(onnx.load(result.onnx).graph, doc, expected)
    for key in enabled:
        if ".param." in key:
            assert result.tensor_map[key] in doc.params
            module, _, pname = key.rsplit(".", 2)
            assert result.tensor_map[key] == f"{module}.{pname}"
        else:
            assert result.tensor_map[key] in doc.activations
    # The FP32 ONNX is the float model: quantizers play no part in it.
    graph = onnx.load(result.onnx).graph
    assert not any(
        n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.domain == "lowbit" for n in graph.node
    )


def test_fp32_onnx_matches_the_float_model(calibrated_sim, tmp_path: Path) -> None:
    sim, model, x = calibrated_sim
    result = export_sim(sim, tmp_path, qdq=False)
    assert result.qdq_onnx is None
    ort_out = run_onnx(result.onnx, [x])[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert abs(ort_out - ref).max() < 1e-4


@pytest.mark.parametrize("version", ENCODING_VERSIONS)
def test_load_into_fresh_sim_reproduces_outputs_bit_exactly(
    calibrated_sim, version: str, tmp_path: Path
) -> None:
    sim, model, x = calibrated_sim
    result = export_sim(sim, tmp_path, encoding_version=version, qdq=False)
    fresh = QuantSim(model, (x,))
    with pytest.raises(Exception, match=r"no encoding"):
        fresh(x)  # uncalibrated: the oracle below is not trivially true
    fresh.load_encodings(result.encodings)
    with torch.no_grad():
        assert torch.equal(fresh(x), sim(x))
    for key, q in sim.quantizers().items():
        if q.enabled:
            assert fresh.quantizers()[key].encoding.equals(q.encoding), key  # type: ignore[union-attr]


def test_digits_names_and_layout_match_aimet_golden(tmp_path: Path) -> None:
    """Same ONNX names as AIMET for the same CNN, and the same keys and value types per entry."""
    torch.manual_seed(0)
    sim = _calibrated(DigitsCNN(), torch.rand(16, 1, 8, 8))
    result = export_sim(sim, tmp_path, encoding_version="1.0.0", output_names=["logits"])
    ours = json.loads(result.encodings.read_text())
    assert result.tensor_map["relu1.output.0"] == "/relu1/Relu_output_0"
    assert result.tensor_map["pool.output.0"] == "/pool/GlobalAveragePool_output_0"
    assert result.tensor_map["fc.output.0"] == "logits"
    assert result.tensor_map["conv1.param.weight"] == "conv1.weight"
    if not GOLDEN.is_file():
        pytest.skip("golden file not present")
    golden = json.loads(GOLDEN.read_text())
    assert set(ours) == set(golden)
    assert set(ours["quantizer_args"]) == set(golden["quantizer_args"])
    assert ours["version"] == golden["version"] == "1.0.0"
    for section in ("activation_encodings", "param_encodings"):
        golden_types = {k: type(v) for k, v in golden[section][0].items()}
        for entry in ours[section]:
            assert {k: type(v) for k, v in entry.items()} == golden_types, entry["name"]
    golden_params = {e["name"]: e for e in golden["param_encodings"]}
    for entry in ours["param_encodings"]:
        assert entry["enc_type"] == golden_params[entry["name"]]["enc_type"]
        assert len(entry["scale"]) == len(golden_params[entry["name"]]["scale"])
        assert set(entry["offset"]) == {-128}
    golden_acts = {e["name"] for e in golden["activation_encodings"]}
    assert {"/relu1/Relu_output_0", "/relu2/Relu_output_0", "/relu3/Relu_output_0"} <= golden_acts
    assert {"/relu1/Relu_output_0", "/relu2/Relu_output_0", "/relu3/Relu_output_0"} <= {
        e["name"] for e in ours["activation_encodings"]
    }


def test_disabled_quantizers_are_left_out(tmp_path: Path) -> None:
    sim = _calibrated(DigitsCNN(), torch.rand(16, 1, 8, 8))
    sim.set_enabled(False, pattern="relu2*")
    result = export_sim(sim, tmp_path, qdq=False)
    doc = read_encodings_file(result.encodings)
    assert "/relu2/Relu_output_0" not in doc.names()
    assert "/relu1/Relu_output_0" in doc.names()


def test_uncalibrated_sim_and_bad_version_are_refused(tmp_path: Path) -> None:
    from core.errors import ConfigError, LowbitError

    x = torch.rand(4, 1, 8, 8)
    sim = QuantSim(DigitsCNN().eval(), (x,))
    with pytest.raises(ConfigError, match=r"unknown encodings version .9\.9."):
        export_sim(sim, tmp_path, encoding_version="9.9")
    with pytest.raises(LowbitError, match=r"without an encoding.*compute_encodings"):
        export_sim(sim, tmp_path)
