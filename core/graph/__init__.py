"""Graph capture and model preparation: the one place that traces models.

Public API: :func:`prepare_model`, :data:`PreparedModel`, :func:`onnx_op_type` (via ``core.graph.op_types``),
:func:`validate_model` and the pattern helpers in ``core.graph.patterns``.
"""

from core.graph.op_types import onnx_op_type, register_op_type
from core.graph.prepare import PreparedModel, prepare_model
from core.graph.validator import (
    NodeIssue,
    ValidationReport,
    check_model,
    float_ops_summary,
    inspect_prepared,
    validate_model,
)

__all__ = [
    "NodeIssue",
    "PreparedModel",
    "ValidationReport",
    "check_model",
    "float_ops_summary",
    "inspect_prepared",
    "onnx_op_type",
    "prepare_model",
    "register_op_type",
    "validate_model",
]
