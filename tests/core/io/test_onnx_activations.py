"""ONNX activations become modules (outputs equal ONNX Runtime's), exporters' spelled-out patterns are fused,
and a Conv followed by its activation forms the supergroup of AIMET's default config."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import helper
from torch import nn

from core.graph import ops, prepare_model, validate_model
from core.io import load_model
from core.quantsim import load_config
from core.quantsim.placement import QuantParams, plan_quantizers
from tests.core.io.onnx_builders import initializer, save_model, tensor_input

RNG = np.random.default_rng(1)
N = helper.make_node
X4 = [tensor_input("x", ["N", 3, 8, 8])]


def _f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


# (id, activation nodes reading "c" and writing "y", extra initializers, opset, module class)
ACTIVATIONS = [
    ("relu6_clip", [N("Clip", ["c", "zero", "six"], ["y"])], [initializer("zero", _f32(0).reshape(())),
     initializer("six", _f32(6).reshape(()))], 17, nn.ReLU6),
    ("clamp", [N("Clip", ["c", "lo", "hi"], ["y"])], [initializer("lo", _f32(-1).reshape(())),
     initializer("hi", _f32(0.5).reshape(()))], 17, ops.Clamp),
    ("clip_opset6", [N("Clip", ["c"], ["y"], min=-0.5, max=0.7)], [], 6, ops.Clamp),
    ("hardswish", [N("HardSwish", ["c"], ["y"])], [], 17, nn.Hardswish),
    ("hardsigmoid", [N("HardSigmoid", ["c"], ["y"], alpha=1 / 6, beta=0.5)], [], 17, nn.Hardsigmoid),
    ("leakyrelu", [N("LeakyRelu", ["c"], ["y"], alpha=0.1)], [], 17, nn.LeakyReLU),
    ("prelu_channels", [N("PRelu", ["c", "slope"], ["y"])],
     [initializer("slope", RNG.uniform(0, 0.5, (4, 1, 1)).astype(np.float32))], 17, nn.PReLU),
    ("gelu", [N("Gelu", ["c"], ["y"])], [], 20, nn.GELU),
    ("softplus", [N("Softplus", ["c"], ["y"])], [], 17, nn.Softplus),
    ("mish", [N("Mish", ["c"], ["y"])], [], 18, nn.Mish),
    ("gelu_erf_pattern", [N("Div", ["c", "sqrt2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["a"]),
                          N("Mul", ["c", "a"], ["m"]), N("Mul", ["m", "half"], ["y"])],
     [initializer("sqrt2", _f32(np.sqrt(2)).reshape(())), initializer("one", _f32(1).reshape(())),
      initializer("half", _f32(0.5).reshape(()))], 17, nn.GELU),
    ("gelu_erf_pattern_half_first", [N("Mul", ["c", "rsqrt2"], ["d"]), N("Erf", ["d"], ["e"]),
                                     N("Add", ["e", "one"], ["a"]), N("Mul", ["c", "half"], ["h"]),
                                     N("Mul", ["h", "a"], ["y"])],
     [initializer("rsqrt2", _f32(1 / np.sqrt(2)).reshape(())), initializer("one", _f32(1).reshape(())),
      initializer("half", _f32(0.5).reshape(()))], 17, nn.GELU),
    ("silu_pattern", [N("Sigmoid", ["c"], ["s"]), N("Mul", ["c", "s"], ["y"])], [], 17, nn.SiLU),
    ("hardswish_pattern", [N("HardSigmoid", ["c"], ["s"], alpha=1 / 6, beta=0.5), N("Mul", ["s", "c"], ["y"])],
     [], 17, nn.Hardswish),
    ("mish_pattern", [N("Softplus", ["c"], ["p"]), N("Tanh", ["p"], ["t"]), N("Mul", ["c", "t"], ["y"])], [], 17,
     nn.Mish),
]  # fmt: skip


def _conv_then(tmp_path, case, act_nodes, extra, opset):
    conv = N("Conv", ["x", "w", "b"], ["c"], name="/features/conv/Conv", pads=[1, 1, 1, 1])
    inits = [initializer("w", RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)),
             initializer("b", RNG.standard_normal(4).astype(np.float32)), *extra]  # fmt: skip
    return save_model(tmp_path / f"{case}.onnx", [conv, *act_nodes], X4, ["y"], inits, opset)


@pytest.mark.parametrize(
    ("case", "act_nodes", "extra", "opset", "cls"), ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS]
)
def test_activation_is_one_module_matching_onnxruntime(tmp_path, case, act_nodes, extra, opset, cls):
    path = _conv_then(tmp_path, case, act_nodes, extra, opset)
    x = RNG.standard_normal((3, 3, 8, 8)).astype(np.float32) * 3
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    loaded = load_model(path)
    with torch.no_grad():
        got = loaded.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    called = [
        type(loaded.module.get_submodule(str(n.target)))
        for n in loaded.module.graph.nodes
        if n.op == "call_module"
    ]
    assert called == [nn.Conv2d, cls]
    assert validate_model(loaded.module, loaded.example_inputs).ok


def test_pattern_with_a_second_reader_is_left_alone(tmp_path):
    """The sigmoid is also a graph output: fusing it into SiLU would lose that tensor."""
    nodes = [N("Sigmoid", ["x"], ["s"]), N("Mul", ["x", "s"], ["y"])]
    path = save_model(tmp_path / "m.onnx", nodes, X4, ["y", "s"])
    loaded = load_model(path)
    kinds = {type(m) for m in loaded.module.modules()}
    assert nn.Sigmoid in kinds and nn.SiLU not in kinds


class _ConvBnAct(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU6(),
            nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4), nn.GELU(),
            nn.Conv2d(4, 4, 1), nn.SiLU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_conv_and_its_clip_form_a_supergroup(tmp_path):
    """Given a torch.onnx export (BN folded, ReLU6 as Clip(0, 6)), when planned with AIMET's default config,
    then no quantizer sits between a Conv and its Clip, and the Clip's output is quantized."""
    torch.manual_seed(0)
    model = _ConvBnAct().eval()
    x = torch.randn(2, 3, 8, 8)
    path = tmp_path / "m.onnx"
    torch.onnx.export(
        model, (x,), path, dynamo=False, opset_version=17, input_names=["x"], dynamic_axes={"x": {0: "batch"}}
    )
    loaded = load_model(path)
    assert validate_model(loaded.module, loaded.example_inputs).ok
    prepared = prepare_model(loaded.module, loaded.example_inputs)
    plans = plan_quantizers(prepared, load_config("default"), QuantParams())
    modules = dict(prepared.named_modules())
    chain = [str(n.target) for n in prepared.graph.nodes if n.op == "call_module"]
    kinds = [type(modules[name]) for name in chain]
    assert kinds == [nn.Conv2d, nn.ReLU6, nn.Conv2d, nn.ReLU6, nn.Conv2d, nn.GELU, nn.Conv2d, nn.SiLU]
    assert [plans[name].output is not None for name in chain] == [
        False,
        True,
        True,  # depthwise: outside supergroups, as in AIMET
        True,
        True,
        True,
        True,
        True,
    ]
    assert plans[chain[1]].inputs == [None]
    with torch.no_grad():
        torch.testing.assert_close(prepared(x), model(x), atol=1e-5, rtol=1e-4)
