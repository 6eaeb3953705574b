"""prepare_model: outputs unchanged, names from the module tree, every leaf typed, reuse duplicated."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import fx, nn

from core.errors import GraphCaptureError
from core.graph import prepare_model
from core.graph.export_capture import export_program, rebuild
from core.graph.fx_capture import capture_with_fx
from core.graph.op_types import onnx_op_type
from core.graph.prepare import PreparedModel
from tests.core.graph.sample_models import FunctionalNet, ResidualNet, ReusedReLU, cases

CASES = cases()
ROUTES = {
    "export": lambda m, x: rebuild(export_program(m, x), m),
    "fx": capture_with_fx,
}


def module_calls(gm: fx.GraphModule) -> list[str]:
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", CASES)
def test_outputs_equal_and_every_leaf_has_an_onnx_type(case: str, route: str) -> None:
    model, inputs = CASES[case]
    prepared = ROUTES[route](model, inputs)
    with torch.no_grad():
        assert torch.equal(prepared(*inputs), model(*inputs))
    calls = module_calls(prepared)
    assert calls, "nothing became a module"
    for target in calls:
        assert isinstance(onnx_op_type(prepared.get_submodule(target)), str)
    # what stayed a function is data movement only: no float math escaped its module
    leftovers = {str(n.target) for n in prepared.graph.nodes if n.op in ("call_function", "call_method")}
    compute = {"add", "mul", "matmul", "softmax", "relu", "cat", "mean", "sigmoid", "conv", "linear"}
    assert not {t for t in leftovers if any(f"aten.{c}." in t for c in compute)}


def test_both_routes_give_the_same_names() -> None:
    for model, inputs in CASES.values():
        assert module_calls(ROUTES["export"](model, inputs)) == module_calls(ROUTES["fx"](model, inputs))


def test_names_follow_the_module_tree_and_parameters_keep_their_names() -> None:
    model, inputs = CASES["residual"]
    prepared = prepare_model(model, inputs)
    calls = module_calls(prepared)
    for name in (
        "conv1",
        "bn1",
        "layer1.0.conv1",
        "layer1.0.bn2",
        "layer1.0.add",
        "layer1.1.downsample.0",
        "fc",
    ):
        assert name in calls
    assert set(prepared.state_dict()) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(prepared.state_dict()[key], value), key


def test_reused_module_becomes_distinct_modules_sharing_nothing_with_the_original() -> None:
    model, inputs = CASES["reused_relu"]
    prepared = prepare_model(model, inputs)
    assert module_calls(prepared) == ["fc1", "relu", "fc2", "relu_1"]
    assert prepared.get_submodule("relu") is not prepared.get_submodule("relu_1")
    # the per-block ReLU of a ResNet block is called twice as well
    residual = prepare_model(*CASES["residual"])
    assert {"layer1.0.relu", "layer1.0.relu_1"} <= set(module_calls(residual))


def test_reused_layer_with_weights_shares_them_between_copies() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.fc(x)))

    model, inputs = Twice().eval(), (torch.randn(2, 4),)
    for route in ROUTES.values():
        prepared = route(model, inputs)
        assert module_calls(prepared) == ["fc", "relu", "fc_1"]
        assert prepared.get_submodule("fc").weight is prepared.get_submodule("fc_1").weight
        assert torch.equal(prepared(*inputs), model(*inputs))


def test_prepared_model_owns_its_tensors() -> None:
    model, inputs = CASES["tiny_cnn"]
    before = copy.deepcopy(model.state_dict())
    prepared = prepare_model(model, inputs)
    with torch.no_grad():
        prepared.get_submodule("conv1").weight.mul_(0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_functional_parameter_is_kept_under_its_name() -> None:
    model, inputs = FunctionalNet().eval(), (torch.randn(1, 3, 8, 8),)
    prepared = prepare_model(model, inputs)
    assert torch.equal(prepared.get_parameter("scale"), model.scale)
    assert module_calls(prepared)[-2:] == ["mul", "mul_1"]


def test_training_flags_are_restored_and_result_is_in_eval_mode() -> None:
    model = ResidualNet().train()
    prepared = prepare_model(model, (torch.randn(2, 3, 16, 16),))
    assert all(m.training for m in model.modules())
    assert not prepared.training


def test_exported_program_from_pt2_file(tmp_path) -> None:
    model, inputs = CASES["residual"]
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model, inputs, strict=False), path)
    prepared = prepare_model(torch.export.load(path), inputs)
    assert isinstance(prepared, PreparedModel)
    with torch.no_grad():
        assert torch.equal(prepared(*inputs), model(*inputs))
    assert module_calls(prepared) == module_calls(prepare_model(model, inputs))
    assert set(prepared.state_dict()) == set(model.state_dict())


def test_graph_module_input_and_preparing_twice_are_stable() -> None:
    model, inputs = CASES["transformer"]
    once = prepare_model(model, inputs)
    twice = prepare_model(once, inputs)
    assert module_calls(twice) == module_calls(once)
    traced = prepare_model(fx.symbolic_trace(model), inputs)
    assert module_calls(traced) == module_calls(once)
    with torch.no_grad():
        assert torch.equal(twice(*inputs), model(*inputs))
        assert torch.equal(traced(*inputs), model(*inputs))


def test_dict_outputs_keep_their_structure() -> None:
    class Heads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"a": self.a(x), "b": self.b(x)}

    model, inputs = Heads().eval(), (torch.randn(2, 3),)
    out = prepare_model(model, inputs)(*inputs)
    assert set(out) == {"a", "b"} and torch.equal(out["b"], model(*inputs)["b"])


def test_in_place_op_on_a_reused_tensor_stays_in_place() -> None:
    class Aliasing(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x * 2
            z = y.relu_()
            return z + y  # y was overwritten by relu_: both read the mutated value

    model, inputs = Aliasing(), (torch.randn(4, 4),)
    prepared = prepare_model(model, inputs)
    assert torch.equal(prepared(*inputs), model(*inputs))


def test_untraceable_model_raises_a_clear_error() -> None:
    class DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum() > 0 else x - 1

    with pytest.raises(GraphCaptureError, match=r"torch\.export.*torch\.fx|torch\.fx.*torch\.export"):
        prepare_model(DataDependent(), (torch.ones(3),))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(TypeError, match="tuple"):
        prepare_model(ReusedReLU(), torch.randn(3, 6))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"nn\.Module"):
        prepare_model("model.pt2", (torch.randn(1),))  # type: ignore[arg-type]


def test_runs_on_device(device: torch.device) -> None:
    model, inputs = CASES["transformer"]
    prepared = prepare_model(model, inputs).to(device)
    reference = copy.deepcopy(model).to(device)
    moved = tuple(t.to(device) for t in inputs)
    with torch.no_grad():
        torch.testing.assert_close(prepared(*moved), reference(*moved), atol=1e-6, rtol=0)
