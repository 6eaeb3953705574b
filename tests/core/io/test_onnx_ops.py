"""Every supported ONNX op converts to torch with the same outputs as ONNX Runtime (atol 1e-5)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from core.errors import UnsupportedOpError
from core.io import load_model
from tests.core.io.onnx_builders import initializer, save_model, tensor_input

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


X4 = [tensor_input("x", ["N", 3, 8, 8])]
X2 = [tensor_input("x", ["N", 6])]
X3 = [tensor_input("x", ["N", 5, 6])]
N = helper.make_node

# (id, nodes, inputs, initializers, opset)
CASES = [
    ("conv", [N("Conv", ["x", "w", "b"], ["y"], name="/features/conv1/Conv", pads=[1, 1, 1, 1])], X4,
     [initializer("w", _w(4, 3, 3, 3)), initializer("b", _w(4))], 17),
    ("conv_asym_pads_groups", [N("Conv", ["x", "w"], ["y"], pads=[0, 1, 1, 0], strides=[2, 2], group=3)], X4,
     [initializer("w", _w(6, 1, 3, 3))], 17),
    ("conv_same_upper", [N("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])], X4,
     [initializer("w", _w(2, 3, 4, 4))], 17),
    ("conv_transpose", [N("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
                          output_padding=[1, 1])], X4, [initializer("w", _w(3, 2, 3, 3)), initializer("b", _w(2))], 17),
    ("gemm", [N("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=0.5, beta=2.0)], X2,
     [initializer("w", _w(4, 6)), initializer("b", _w(4))], 17),
    ("gemm_no_trans", [N("Gemm", ["x", "w"], ["y"])], X2, [initializer("w", _w(6, 4))], 17),
    ("matmul_const", [N("MatMul", ["x", "w"], ["y"])], X3, [initializer("w", _w(6, 7))], 17),
    ("matmul_dynamic", [N("Transpose", ["x"], ["t"], perm=[0, 2, 1]), N("MatMul", ["x", "t"], ["y"])], X3, [], 17),
    ("batchnorm", [N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)], X4,
     [initializer("s", _w(3)), initializer("b", _w(3)), initializer("m", _w(3)),
      initializer("v", np.abs(_w(3)) + 0.5)], 17),
    ("layernorm", [N("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1, epsilon=1e-5)], X3,
     [initializer("s", _w(6)), initializer("b", _w(6))], 17),
    ("relu", [N("Relu", ["x"], ["y"])], X4, [], 17),
    ("clip", [N("Clip", ["x", "lo", "hi"], ["y"])], X4,
     [initializer("lo", np.array(-0.5, np.float32)), initializer("hi", np.array(0.7, np.float32))], 17),
    ("clip_opset6", [N("Clip", ["x"], ["y"], min=-0.2, max=0.3)], X4, [], 6),
    ("sigmoid", [N("Sigmoid", ["x"], ["y"])], X4, [], 17),
    ("tanh", [N("Tanh", ["x"], ["y"])], X4, [], 17),
    ("gelu", [N("Gelu", ["x"], ["y"])], X4, [], 20),
    ("gelu_tanh", [N("Gelu", ["x"], ["y"], approximate="tanh")], X4, [], 20),
    ("hardswish", [N("HardSwish", ["x"], ["y"])], X4, [], 17),
    ("hardsigmoid", [N("HardSigmoid", ["x"], ["y"], alpha=0.3, beta=0.4)], X4, [], 17),
    ("leakyrelu", [N("LeakyRelu", ["x"], ["y"], alpha=0.2)], X4, [], 17),
    ("arith", [N("Add", ["x", "c"], ["a"]), N("Mul", ["a", "x"], ["m"]), N("Sub", ["m", "c"], ["s"]),
               N("Div", ["s", "d"], ["y"])], X2,
     [initializer("c", _w(6)), initializer("d", np.abs(_w(1)) + 1.0)], 17),
    ("pow_sqrt_erf", [N("Abs", ["x"], ["a"]), N("Sqrt", ["a"], ["s"]), N("Pow", ["s", "p"], ["q"]),
                      N("Erf", ["q"], ["y"])], X2, [initializer("p", np.array(3.0, np.float32))], 17),
    ("concat", [N("Relu", ["x"], ["r"]), N("Concat", ["x", "r"], ["y"], axis=1)], X2, [], 17),
    ("concat_constants_folded", [N("Concat", ["c", "c"], ["k"], axis=1), N("Add", ["x", "k"], ["y"])], X2,
     [initializer("c", _w(1, 3))], 17),
    ("reshape_flatten", [N("Reshape", ["x", "shape"], ["r"]), N("Flatten", ["r"], ["y"], axis=1)], X4,
     [initializer("shape", _i64(0, 3, -1))], 17),
    ("flatten_axis2", [N("Flatten", ["x"], ["y"], axis=2)], X4, [], 17),
    ("transpose_squeeze_unsqueeze", [N("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
                                     N("Unsqueeze", ["t", "ax"], ["u"]), N("Squeeze", ["u", "ax"], ["y"])], X4,
     [initializer("ax", _i64(2))], 17),
    ("squeeze_opset11", [N("Unsqueeze", ["x"], ["u"], axes=[-1]), N("Squeeze", ["u"], ["y"], axes=[-1])], X4, [], 11),
    ("shape_gather_dynamic_reshape", [
        N("Shape", ["x"], ["s"]), N("Gather", ["s", "zero"], ["n"], axis=0), N("Unsqueeze", ["n", "ax0"], ["n1"]),
        N("Concat", ["n1", "minus1"], ["target"], axis=0), N("Reshape", ["x", "target"], ["y"])], X4,
     [initializer("zero", np.array(0, np.int64)), initializer("ax0", _i64(0)), initializer("minus1", _i64(-1))], 17),
    ("gather_rows", [N("Gather", ["x", "idx"], ["y"], axis=1)], X3, [initializer("idx", _i64(4, -1, 0))], 17),
    ("slice", [N("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], X4,
     [initializer("st", _i64(1, -1)), initializer("en", _i64(9999, -9999)), initializer("ax", _i64(2, 3)),
      initializer("sp", _i64(2, -2))], 17),
    ("maxpool", [N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])], X4, [], 17),
    ("maxpool_asym_ceil", [N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1],
                             ceil_mode=0)], X4, [], 17),
    ("avgpool", [N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                   count_include_pad=0)], X4, [], 17),
    ("global_avgpool", [N("GlobalAveragePool", ["x"], ["y"])], X4, [], 17),
    ("softmax", [N("Softmax", ["x"], ["y"], axis=1)], X3, [], 17),
    ("softmax_opset11", [N("Softmax", ["x"], ["y"], axis=1)], X3, [], 11),
    ("reducemean", [N("ReduceMean", ["x", "ax"], ["y"], keepdims=0)], X4, [initializer("ax", _i64(2, 3))], 18),
    ("reducemean_opset13", [N("ReduceMean", ["x"], ["y"], axes=[-1], keepdims=1)], X4, [], 13),
    ("resize_nearest", [N("Resize", ["x", "", "sc"], ["y"], mode="nearest",
                          coordinate_transformation_mode="asymmetric", nearest_mode="floor")], X4,
     [initializer("sc", np.array([1, 1, 2, 2], np.float32))], 17),
    ("resize_linear", [N("Resize", ["x", "", "sc"], ["y"], mode="linear",
                         coordinate_transformation_mode="half_pixel")], X4,
     [initializer("sc", np.array([1, 1, 1.5, 2], np.float32))], 17),
    ("resize_sizes_align", [N("Resize", ["x", "", "", "sz"], ["y"], mode="linear",
                              coordinate_transformation_mode="align_corners")],
     [tensor_input("x", [3, 3, 8, 8])], [initializer("sz", _i64(3, 3, 5, 11))], 17),
    ("gather_elements", [N("GatherElements", ["x", "gi"], ["y"], axis=2)], X3,
     [initializer("gi", np.array([[[0, -1], [2, 1], [5, 0], [3, 3], [1, 4]]], np.int64))], 17),
    ("gather_nd", [N("GatherND", ["x", "ni"], ["y"])], X3, [initializer("ni", np.array([[0, 1], [0, -1]], np.int64))], 17),
    ("cumsum_exclusive_reverse", [N("CumSum", ["x", "cax"], ["y"], exclusive=1, reverse=1)], X3,
     [initializer("cax", np.array(1, np.int64))], 17),
    ("le_ge_xor_where", [N("LessOrEqual", ["x", "z"], ["a"]), N("GreaterOrEqual", ["x", "h"], ["b"]),
                         N("Xor", ["a", "b"], ["c"]), N("Where", ["c", "x", "z"], ["y"])], X3,
     [initializer("z", np.array(0.0, np.float32)), initializer("h", np.array(-0.5, np.float32))], 17),
    ("mod_isnan", [N("Mod", ["x", "m"], ["r"], fmod=1), N("IsNaN", ["r"], ["n"]), N("Where", ["n", "m", "r"], ["y"])],
     X3, [initializer("m", np.array(0.7, np.float32))], 17),
    ("pad_reflect_split_concat", [N("Pad", ["x", "pp"], ["p"], mode="reflect"),
                                  N("Split", ["p", "sp"], ["s0", "s1"], axis=3), N("Concat", ["s1", "s0"], ["y"], axis=3)],
     X4, [initializer("pp", _i64(0, 0, 1, 2, 0, 0, 2, 1)), initializer("sp", _i64(4, 7))], 17),
    ("pad_computed_from_shape", [N("Shape", ["x"], ["s"]), N("Slice", ["s", "i0", "i1"], ["n"]),
                                 N("Concat", ["zeros3", "n", "zeros3", "n"], ["pp"], axis=0),
                                 N("Pad", ["x", "pp"], ["y"])], X4,
     [initializer("i0", _i64(0)), initializer("i1", _i64(1)), initializer("zeros3", _i64(0, 0, 0))], 17),
    ("split_num_outputs", [N("Split", ["x"], ["a", "b"], axis=2, num_outputs=2), N("Sub", ["a", "b"], ["y"])],
     [tensor_input("x", ["N", 3, 8, 8])], [], 18),
    ("instance_norm", [N("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-4)], X4,
     [initializer("s", _w(3)), initializer("b", _w(3))], 17),
    ("reduce_l2", [N("ReduceL2", ["x", "ax"], ["y"], keepdims=1)], X4, [initializer("ax", _i64(1))], 18),
    ("global_avgpool_1d", [N("GlobalAveragePool", ["x"], ["y"])], X3, [], 17),
    ("identity_dropout_constant", [N("Constant", [], ["c"], value_float=2.5), N("Identity", ["x"], ["i"]),
                                   N("Dropout", ["i"], ["d"]), N("Mul", ["d", "c"], ["y"])], X4, [], 17),
]  # fmt: skip


def _run_both(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    loaded = load_model(path)
    with torch.no_grad():
        got = loaded.module(*(torch.from_numpy(feeds[n]) for n in loaded.input_names))
    got = got if isinstance(got, tuple) else (got,)
    return expected, [g.numpy() for g in got], loaded


@pytest.mark.parametrize(("case", "nodes", "inputs", "inits", "opset"), CASES, ids=[c[0] for c in CASES])
def test_op_matches_onnxruntime(tmp_path, case, nodes, inputs, inits, opset):
    path = save_model(tmp_path / f"{case}.onnx", nodes, inputs, [nodes[-1].output[0]], inits, opset)
    # Batch 3 differs from the probe sizes the converter uses, so wrongly folded shapes would show here.
    dims = [d.dim_value or 3 for d in inputs[0].type.tensor_type.shape.dim]
    feeds = {"x": RNG.standard_normal(dims).astype(np.float32)}
    expected, got, _ = _run_both(path, feeds)
    assert got[0].shape == expected[0].shape
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5, rtol=1e-5)


def test_weighted_layers_become_named_modules(tmp_path):
    nodes, inputs, inits = CASES[0][1], CASES[0][2], CASES[0][3]
    loaded = load_model(save_model(tmp_path / "conv.onnx", nodes, inputs, ["y"], inits))
    modules = dict(loaded.module.named_modules())
    assert isinstance(modules["features_conv1"], torch.nn.Conv2d)
    assert loaded.source_format == "onnx" and loaded.input_names == ["x"] and loaded.output_names == ["y"]
    assert [tuple(t.shape) for t in loaded.example_inputs] == [(2, 3, 8, 8)]  # open batch: size 2


def test_digits_example_matches_onnxruntime(digits_artifacts):
    with np.load(digits_artifacts.eval_data) as data:
        images = data["input"]
    expected, got, loaded = _run_both(digits_artifacts.model_onnx, {"input": images})
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5, rtol=1e-5)
    names = {
        name for name, m in loaded.module.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    }
    assert names == {"conv1", "conv2", "conv3", "fc"}


def test_unsupported_op_names_op_node_and_supported_list(tmp_path):
    path = save_model(
        tmp_path / "m.onnx", [N("NonMaxSuppression", ["x", "x"], ["y"], name="nms_1")], X4, ["y"]
    )
    with pytest.raises(
        UnsupportedOpError, match=r"'nms_1'.*'NonMaxSuppression' is not supported.*Conv.*Resize"
    ):
        load_model(path)


def test_foreign_domain_op_is_unsupported(tmp_path):
    node = N("FusedConv", ["x"], ["y"], domain="com.microsoft", name="fc")
    path = save_model(tmp_path / "m.onnx", [node], X4, ["y"])
    with pytest.raises(UnsupportedOpError, match=r"com\.microsoft"):
        load_model(path)


def test_integer_division_truncates_like_onnx(tmp_path):
    inputs = [tensor_input("x", ["N", 4], TensorProto.INT64)]
    nodes = [N("Div", ["x", "d"], ["y"])]
    path = save_model(
        tmp_path / "div.onnx", nodes, inputs, ["y"], [initializer("d", _i64(3))], 17, TensorProto.INT64
    )
    feeds = {"x": np.array([[7, -7, 9, 2]] * 2, dtype=np.int64)}
    expected, got, _ = _run_both(path, feeds)
    np.testing.assert_array_equal(got[0], expected[0])
