"""Activations the export decomposes (GELU, SiLU, Mish at opset 17; rsqrt as 1 / Sqrt) are simulated as the target runs them.

Given a Linear → activation → Linear model, when the config's target rounds decomposed ops node by
node (AIMET's placement, ``"per_node"``), then the chain lowbit simulates is the exporter's node for
node, the sim rounds its intermediates on exactly the encodings the exported file holds for them,
and ONNX Runtime running the exported QDQ model (which then carries those Q/DQ pairs) computes what
the sim computes. With a target that runs the chain in float (``"fused"``: lowbit's default and
onnxruntime_cpu presets) the sim and the QDQ model keep the one-op form, and the two modes differ.
The aimet-onnx oracle for the same arithmetic is tests/core/aimet/test_strict_corpus.py (ViT).
"""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from core.export.reader import read_encodings_file
from core.export.runtime import compare_outputs
from core.graph import ops
from core.quantsim import QuantSim
from core.quantsim.config import load_config, parse_config
from core.quantsim.decomposed import chain_of
from core.quantsim.target import TargetArithmetic

ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": lambda: nn.SiLU(),
    "mish": lambda: nn.Mish(),
    "rsqrt": lambda: ops.Rsqrt(),  # T5's RMSNorm in a .pt2; its input made positive below
}


def _config(mode: str, preset: str = "default"):
    cfg = load_config(preset)
    return dataclasses.replace(cfg, target=dataclasses.replace(cfg.target, decomposed_ops=mode))


def _sim(act: str, mode: str, preset: str = "default", seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 64), ACTIVATIONS[act](), nn.Linear(64, 10)).eval()
    if act == "rsqrt":  # a domain of positive values (the Linear's outputs lie within +-6 of its bias)
        with torch.no_grad():
            model[0].bias.add_(8.0)
    x = torch.randn(256, 16) * 2
    sim = QuantSim(model, (x[:1],), config=_config(mode, preset))
    sim.compute_encodings([x[:128]])
    return sim, x[128:]


def _run_qdq_graph(path, x: torch.Tensor) -> np.ndarray:
    """The QDQ graph's own arithmetic (no kernel fusion: its integer Gemm and float bias are another
    matter, covered by tests/core/quantsim/test_target_arithmetic.py)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _chain_in_graph(graph: onnx.GraphProto) -> list[tuple[str, tuple]]:
    """The nodes between the first Gemm and the last one, as (op, args): "x", a node index, a float."""
    constants = {
        n.output[0]: float(numpy_helper.to_array(n.attribute[0].t))
        for n in graph.node
        if n.op_type == "Constant"
    }
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    produced = {gemms[0].output[0]: "x"}
    chain = []
    for node in graph.node:
        if node.op_type in ("Gemm", "Constant"):
            continue
        args = tuple(produced[i] if i in produced else constants[i] for i in node.input)
        produced[node.output[0]] = len(chain)
        chain.append((node.op_type, args))
    return chain


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_per_node_sim_is_the_exported_chain_on_the_files_encodings_and_runs_as_ort_runs_the_qdq_model(
    act, tmp_path
):
    sim, x = _sim(act, "per_node")
    module = sim.model.get_submodule("1.rsqrt" if act == "rsqrt" else "1")  # rsqrt traced as a call
    chain = chain_of(module)
    assert chain is not None and module.__dict__.get("_lowbit_per_node") is not None
    result = sim.export(tmp_path, encoding_version="2.0.0")

    # The chain the sim runs is the one the exporter writes: same ops, operand order, float32 constants.
    index = {node.name: i for i, node in enumerate(chain)}
    ours = [
        (n.op, tuple("x" if a == "x" else index[a] if isinstance(a, str) else a for a in n.args))
        for n in chain
    ]
    assert _chain_in_graph(onnx.load(result.onnx).graph) == ours

    # The sim rounds each intermediate on the encoding the file holds for that tensor, bit for bit.
    written = read_encodings_file(result.encodings).activations
    rounding = module.__dict__["_lowbit_per_node"]
    graph = onnx.load(result.onnx).graph
    inner_outputs = [n.output[0] for n in graph.node if n.op_type not in ("Gemm", "Constant")][:-1]
    quantizers = rounding._intermediates(rounding.input_quantizer(), torch.device("cpu"))
    assert len(quantizers) == len(inner_outputs) == len(chain) - 1
    for name, q in zip(inner_outputs, quantizers, strict=True):
        assert written[name].scale.tolist() == q.scale.tolist(), name
        assert written[name].offset.tolist() == (-q.zero_point).tolist(), name

    # ONNX Runtime on the QDQ model (intermediates quantized there too) computes what the sim computes.
    with torch.no_grad():
        simulated = sim(x).numpy()
    agreement = compare_outputs(simulated, _run_qdq_graph(result.qdq_onnx, x))
    assert agreement["sqnr_db"] >= 80.0, agreement

    # ... and it is not the one-op simulation: the roundings inside the chain change the outputs.
    fused, _ = _sim(act, "fused")
    with torch.no_grad():
        one_op = fused(x).numpy()
    assert compare_outputs(one_op, simulated)["sqnr_db"] < 60.0


@pytest.mark.parametrize("act", ["gelu", "silu"])
def test_fused_sim_and_its_qdq_model_run_the_chain_in_float(act, tmp_path):
    sim, x = _sim(act, "fused")
    assert "_lowbit_per_node" not in sim.model.get_submodule("1").__dict__
    result = sim.export(tmp_path)
    qdq = onnx.load(result.qdq_onnx).graph
    quantized = {n.input[0] for n in qdq.node if n.op_type == "QuantizeLinear"}
    inner = {
        n.output[0]
        for n in onnx.load(result.onnx).graph.node
        if n.op_type in ("Div", "Erf", "Add", "Sigmoid")
    }
    assert not {f"{t}_float" for t in inner} & {q.rsplit("__", 1)[0] for q in quantized}
    with torch.no_grad():
        simulated = sim(x).numpy()
    agreement = compare_outputs(simulated, _run_qdq_graph(result.qdq_onnx, x))
    assert agreement["sqnr_db"] >= 80.0, agreement


def test_per_node_rounding_follows_the_input_grid_and_output_quantizer():
    """Calibration observes the float activation; a disabled grid upstream or at the output runs it in float."""
    sim, x = _sim("gelu", "per_node")
    fused, _ = _sim("gelu", "fused")
    with torch.no_grad():
        assert not torch.equal(sim(x), fused(x))
        # A copy (AutoQuant's trials) reads its own quantizers, not the original's.
        clone, fused_clone = copy.deepcopy(sim), copy.deepcopy(fused)
        for s in (clone, fused_clone):
            s.set_enabled(False, pattern="0.output.0")
        assert torch.equal(clone(x), fused_clone(x)) and not torch.equal(sim(x), fused(x))
        for s in (sim, fused):
            s.set_enabled(False, pattern="0.output.0")
        assert torch.equal(sim(x), fused(x))
        for s in (sim, fused):
            s.set_enabled(True, pattern="0.output.0")
            s.set_enabled(False, pattern="1.output.0")
        assert torch.equal(sim(x), fused(x))


def test_fixed_output_ranges_of_the_config_hold_inside_the_chain(tmp_path):
    """HTP's Sigmoid [0, 1]: SiLU's Sigmoid node gets that range in the sim and in the file."""
    sim, _ = _sim("silu", "per_node", preset="htp_v73")
    rounding = sim.model.get_submodule("1").__dict__["_lowbit_per_node"]
    (sigmoid_q,) = rounding._intermediates(rounding.input_quantizer(), torch.device("cpu"))
    assert float(sigmoid_q.scale) == pytest.approx(1 / 255) and int(sigmoid_q.zero_point) == 0
    result = sim.export(tmp_path, encoding_version="2.0.0", qdq=False)
    sigmoid_out = next(n.output[0] for n in onnx.load(result.onnx).graph.node if n.op_type == "Sigmoid")
    written = read_encodings_file(result.encodings).activations[sigmoid_out]
    assert written.scale.tolist() == sigmoid_q.scale.tolist() and written.offset.tolist() == [0.0]


def test_presets_say_how_their_runtime_computes_decomposed_ops():
    assert load_config(None).target.decomposed_ops == "fused"  # QDQ in ONNX Runtime: float inside the chain
    assert load_config("onnxruntime_cpu").target.decomposed_ops == "fused"
    assert load_config("qnn_htp").target.decomposed_ops == "per_node"
    assert load_config("htp_v73").target.decomposed_ops == "per_node"
    # An AIMET config file as shipped (no lowbit target): AIMET's placement, every ONNX node output.
    raw = json.loads(json.dumps({k: v for k, v in _preset_json("default").items() if k != "target"}))
    assert parse_config(raw).target == TargetArithmetic(decomposed_ops="per_node")


def _preset_json(name: str) -> dict:
    from importlib import resources

    return json.loads(resources.files("core.quantsim.presets").joinpath(f"{name}.json").read_text())
