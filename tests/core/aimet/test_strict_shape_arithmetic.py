"""Size arithmetic in a TorchScript-exported graph: aimet-onnx loads lowbit's encodings strictly.

Given an ONNX file shaped like the TorchScript exporter's MobileViT (a feature map's height read with
Shape, cast to float, divided by the patch size and rounded up; a bilinear Resize to a size computed
in the graph, whose output's Shape is read beside the Reshape that carries its values), when lowbit
quantizes it with AIMET's default config and exports, then aimet-onnx's strict loader accepts the
file and its simulation equals lowbit's: the Cast's float output stays unquantized (the config's Cast
rule; aimet-onnx has no quantizer at its reader either), and the Resize output is encoded under its
own name (lowbit quantizes where the Reshape's reader reads it; the Shape beside reads no values).
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from core.export.runtime import compare_outputs
from core.io import load_model
from core.quantsim import QuantSim


def _init(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name)


def _size_arithmetic_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        _init("conv.weight", rng.normal(size=(4, 3, 1, 1)).astype(np.float32)),
        _init("conv.bias", rng.normal(size=4).astype(np.float32)),
        _init("patch", np.array(2.0, np.float32)),
        _init("two", np.array(2, np.int64)),
        _init("h_axis", np.array(2, np.int64)),
        _init("batch_axis", np.array(0, np.int64)),
        _init("zero", np.array([0], np.int64)),
        _init("two_dims", np.array([2], np.int64)),
        _init("minus_one", np.array([-1], np.int64)),
        _init("fc.weight", rng.normal(size=(4 * 8 * 8, 10)).astype(np.float32) / 16),
        _init("fc.bias", rng.normal(size=10).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"]),
        # ceil(h / patch) * patch, in float as the TorchScript exporter writes math.ceil on a size
        helper.make_node("Shape", ["c"], ["s"]),
        helper.make_node("Gather", ["s", "h_axis"], ["h"]),
        helper.make_node("Cast", ["h"], ["h_float"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["h_float", "patch"], ["h_div"]),
        helper.make_node("Ceil", ["h_div"], ["h_ceil"]),
        helper.make_node("Mul", ["h_ceil", "patch"], ["h_new"]),
        helper.make_node("Cast", ["h_new"], ["h_int"], to=TensorProto.INT64),
        helper.make_node("Mul", ["h_int", "two"], ["side"]),
        helper.make_node("Unsqueeze", ["side", "zero"], ["side_1d"]),
        helper.make_node("Slice", ["s", "zero", "two_dims"], ["n_c"]),
        helper.make_node("Concat", ["n_c", "side_1d", "side_1d"], ["sizes"], axis=0),
        helper.make_node(
            "Resize",
            ["c", "", "", "sizes"],
            ["r"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        # the reshape target from the Resize output's own Shape
        helper.make_node("Shape", ["r"], ["rs"]),
        helper.make_node("Gather", ["rs", "batch_axis"], ["n"]),
        helper.make_node("Unsqueeze", ["n", "zero"], ["n_1d"]),
        helper.make_node("Concat", ["n_1d", "minus_one"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["r", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc.weight"], ["mm"]),
        helper.make_node("Add", ["mm", "fc.bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "size_arithmetic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_aimet_strict_loads_a_cast_size_and_a_resize_read_by_shape(aimet, tmp_path):
    path = tmp_path / "user.onnx"
    onnx.save(_size_arithmetic_model(), path)
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    sim = QuantSim(load_model(path), (x[:2],), config=aimet.configs / "default_config.json")
    sim.compute_encodings([x[:4], x[4:]])
    sim.export(tmp_path / "out", encoding_version="1.0.0", qdq=False)

    out = tmp_path / "out"
    asim = aimet.QuantizationSimModel(
        onnx.load(out / "model.onnx"), config_file=str(aimet.configs / "default_config.json")
    )
    assert aimet.load(asim, str(out / "model.encodings"), strict=True) == []
    probe = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    theirs = asim.session.run(None, {asim.session.get_inputs()[0].name: probe.numpy()})[0]
    with torch.no_grad():
        ours = sim.model(probe).numpy()
    agreement = compare_outputs(ours, theirs)
    assert agreement["sqnr_db"] >= 60 and agreement["top1_agreement"] == 1.0, agreement
