"""A target that says ``rounding: half_away`` rounds as aimet-onnx's simulation kernel does, bit for bit.

Oracle: aimet-onnx 2.42's QcQuantizeOp running in its ONNX Runtime session (the op its
QuantizationSimModel inserts), on a one-node graph whose input quantizer holds a given encoding.
The inputs are exact half steps of the grid (what fp16-stored embedding tables put on an 8-bit
grid: MiniLM has 606 in its word embeddings), their float32 neighbours, and random values, on an
asymmetric grid with an odd offset and on a signed symmetric one. lowbit's default rounding (half
to even before the zero point, like ONNX QuantizeLinear) disagrees with AIMET on many of those
ties, which is what makes the check able to fail.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from core.errors import ConfigError
from core.quant.encoding import Encoding, QuantSpec
from core.quant.quantizer import Quantizer
from core.quantsim import QuantSim
from core.quantsim.target import TargetArithmetic

# (scale, file offset, symmetric): the MiniLM word-embedding grid (offset -111), a signed symmetric grid.
GRIDS = [(0.0007683248841203749, -111, False), (0.013872014358639717, -128, True)]


def _inputs(scale: float, offset: int) -> np.ndarray:
    s = np.float32(scale)
    ties = ((np.arange(-300, 300, dtype=np.float32) + np.float32(0.5)) * s).astype(np.float32)
    near = np.concatenate([np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))])
    noise = np.random.default_rng(0).normal(0.0, 80.0 * float(s), 4000).astype(np.float32)
    return np.concatenate([ties, near, noise]).astype(np.float32)


def _aimet_quantize_dequantize(x: np.ndarray, scale: float, offset: int, symmetric: bool) -> np.ndarray:
    from aimet_onnx.quantsim import QuantizationSimModel

    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])],
        "one_node",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [x.size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x.size])],
    )
    sim = QuantizationSimModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    sim.qc_quantize_op_dict["y"].enabled = False  # Neg is exact: y = -quantize_dequantize(x)
    encoding = {"bw": 8, "dtype": "INT", "enc_type": "PER_TENSOR", "is_sym": symmetric, "name": "x"}
    sim.qc_quantize_op_dict["x"]._load_encodings_dict({**encoding, "offset": [offset], "scale": [scale]})
    sim._rebuild_session()
    return -sim.session.run(None, {"x": x})[0]


def _lowbit(x: np.ndarray, scale: float, offset: int, symmetric: bool, rounding: str) -> np.ndarray:
    spec = QuantSpec(bitwidth=8, symmetric=symmetric)
    q = Quantizer(spec)
    q.set_encoding(Encoding(spec, torch.tensor([scale]), torch.tensor([float(offset)])))
    q.rounding = rounding
    with torch.no_grad():
        return q(torch.from_numpy(x.copy())).numpy()


@pytest.mark.parametrize(("scale", "offset", "symmetric"), GRIDS)
def test_half_away_rounding_matches_aimets_quantize_op(scale, offset, symmetric):
    x = _inputs(scale, offset)
    theirs = _aimet_quantize_dequantize(x, scale, offset, symmetric)
    ours = _lowbit(x, scale, offset, symmetric, "half_away")
    np.testing.assert_array_equal(ours, theirs)
    # The default (half to even, then the zero point) is a different arithmetic on these ties.
    default = _lowbit(x, scale, offset, symmetric, "half_even")
    assert (default != theirs).sum() >= 100


def test_a_configs_target_sets_every_quantizers_rounding(aimet):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval()
    x = torch.randn(8, 4)
    shipped = json.loads((aimet.configs / "default_config.json").read_text())
    aimet_like = QuantSim(model, (x,), config={**shipped, "target": {"rounding": "half_away"}})
    assert {q.rounding for q in aimet_like.quantizers().values()} == {"half_away"}
    assert {q.rounding for q in QuantSim(model, (x,)).quantizers().values()} == {"half_even"}
    with pytest.raises(ConfigError, match="rounding"):
        TargetArithmetic.parse({"rounding": "nearest"}, "target")
