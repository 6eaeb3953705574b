"""validate_model: per-node findings with fix-it messages; never a stack trace."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.graph.op_types import register_op_type
from core.graph.validator import ValidationReport, validate_model
from tests.core.graph.sample_models import cases


@pytest.mark.parametrize(("name", "case"), list(cases().items()))
def test_supported_models_are_ok(name: str, case: tuple) -> None:
    report = validate_model(*case)
    assert report.ok, report.format_table()
    assert report.capture == "torch.export"
    assert "every computation can be quantized" in report.format_table()


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x - 1


def test_untraceable_model_is_a_report_not_an_exception() -> None:
    report = validate_model(nn.Sequential(nn.Linear(3, 3), DataDependent()), (torch.ones(2, 3),))
    assert not report.ok
    (issue,) = report.issues
    assert issue.node == "<model>" and "torch.cond" in issue.fix
    assert "torch.export" in issue.problem and "torch.fx" in issue.problem


def test_registering_the_offending_module_as_a_leaf_makes_it_traceable() -> None:
    @register_op_type("If")
    class Branchy(DataDependent):
        pass

    model, inputs = nn.Sequential(nn.Linear(3, 3), Branchy()).eval(), (torch.ones(2, 3),)
    report = validate_model(model, inputs)
    assert report.ok and report.capture == "torch.fx", report.format_table()


def test_unsupported_float_op_runs_in_float_and_is_named_with_its_source_line() -> None:
    """Given a model with an op that has no quantized module (cumsum), when it is validated, then the
    verdict is ok (the op runs in float, the rest is quantized), the op is listed with its source line,
    and the fix tells the user what they can change — not lowbit's source."""

    class Normed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(self.fc(x), dim=-1)

    report = validate_model(Normed().eval(), (torch.randn(2, 4),))
    assert report.ok and not report.issues
    (issue,) = report.float_ops
    assert issue.op == "aten.cumsum"
    assert "test_validator.py" in issue.problem
    assert "core/graph" not in issue.fix and "export" in issue.fix
    assert report.float_summary() == "1 op left in float: aten.cumsum"
    assert "1 op left in float: aten.cumsum" in report.format_table()
    assert json.loads(json.dumps(report.to_dict()))["float_ops"][0]["op"] == "aten.cumsum"


def test_in_place_write_into_the_input_is_reported() -> None:
    class Clobber(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x.relu_()
            return x * 2

    report = validate_model(Clobber(), (torch.randn(2, 4),))
    assert report.ok
    assert any("in-place" in i.problem for i in report.float_ops), report.format_table()


def test_integer_math_and_data_movement_are_not_reported() -> None:
    class Positions(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(x.shape[1]) + 1  # int64 arithmetic: no quantizer needed
            return (x + self.emb(pos)).permute(1, 0, 2).reshape(x.shape[1], -1)

    report = validate_model(Positions().eval(), (torch.randn(2, 5, 4),))
    assert report.ok, report.format_table()


def test_in_place_dropout_in_eval_mode_is_data_movement() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2, inplace=True), nn.Linear(4, 2)).eval()
    report = validate_model(model, (torch.randn(2, 4),))
    assert report.ok and not report.float_ops, report.format_table()


def test_fused_attention_is_a_note_with_the_eager_fix() -> None:
    class Attn(nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, q, q)

    report = validate_model(Attn(), (torch.randn(1, 2, 3, 4),))
    assert report.ok and not report.float_ops
    assert [i.op for i in report.notes] == ["Attention"]
    assert "eager" in report.notes[0].fix


def test_report_is_frozen() -> None:
    report = ValidationReport(True)
    with pytest.raises(AttributeError):
        report.ok = False  # type: ignore[misc]
