"""Model validator: which computations cannot be quantized, where, why, and what to do about it.

AIMET's validator answers "reused module" / "functional op" with a yes/no in a log. Ours prepares the model
(reuse and most functional math are fixed by preparation, so they are not problems) and reports what is
left, per node, with the source line and a fix-it message. A model that cannot be traced at all gives
``ok=False`` with the tracers' reasons — never a stack trace.

Example::

    report = validate_model(model, (torch.randn(1, 3, 224, 224),))
    if not report.ok:
        print(report.format_table())
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.export import ExportedProgram

from core.errors import LowbitError
from core.graph import ops
from core.graph.aten_registry import inplace_is_safe, is_data_movement, is_inplace, packet_name
from core.graph.fx_functions import DATA_MOVEMENT_FUNCTIONS, DATA_MOVEMENT_METHODS
from core.graph.module_tree import stack_owner
from core.graph.op_types import has_op_type
from core.graph.prepare import prepare_model

FIX_NEW_OP = (
    "no quantized counterpart; it will run in float. Add a module to core/graph/ops.py "
    "(@register_op_type) and a converter in core/graph/aten_math.py, or replace the call with a supported op"
)
FIX_CONTROL_FLOW = (
    "make the model traceable: rewrite data-dependent control flow with torch.cond, or wrap it in a leaf "
    "module registered with core.graph.op_types.register_op_type (traced as one opaque op)"
)


@dataclass(frozen=True)
class NodeIssue:
    """One finding: ``node`` (graph node or model), ``op`` (its target), ``problem`` and ``fix`` in words."""

    node: str
    op: str
    problem: str
    fix: str


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of :func:`validate_model`; ``ok`` is True when nothing was found."""

    ok: bool
    issues: list[NodeIssue] = field(default_factory=list)
    capture: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"ok", "capture", "issues": [{"node", "op", "problem", "fix"}]}``."""
        return {"ok": self.ok, "capture": self.capture, "issues": [asdict(i) for i in self.issues]}

    def format_table(self) -> str:
        """A plain-text table, one row per issue (for the CLI and logs)."""
        head = f"model captured with {self.capture}" if self.capture else "model could not be captured"
        if not self.issues:
            return f"{head}: every computation can be quantized."
        rows = [("node", "op", "problem"), *((i.node, i.op, i.problem) for i in self.issues)]
        widths = [min(48, max(len(r[c]) for r in rows)) for c in range(2)]
        lines = [f"{head}: {len(self.issues)} issue(s)"]
        for index, row in enumerate(rows):
            lines.append(
                " | ".join(
                    [row[0][: widths[0]].ljust(widths[0]), row[1][: widths[1]].ljust(widths[1]), row[2]]
                )
            )
            if index == 0:
                lines.append("-+-".join(["-" * widths[0], "-" * widths[1], "-" * 7]))
            else:
                lines.append(" " * (widths[0] + 3) + f"fix: {self.issues[index - 1].fix}")
        return "\n".join(lines)


def validate_model(model: nn.Module | ExportedProgram, example_inputs: tuple[Any, ...]) -> ValidationReport:
    """Prepare ``model`` and report, per node, what cannot be quantized and why, with a fix-it message.

    Reported: untraceable models (ok=False, one issue naming both tracers' failures); float math with no
    quantizable module; in-place writes that are read later or hit a model input; leaf modules without an
    ONNX op type; fused attention (one quantizer for the whole op). Math on non-float tensors (index
    arithmetic, masks) and data movement are fine and not reported.
    """
    try:
        prepared = prepare_model(model, example_inputs)
    except LowbitError as error:
        return ValidationReport(False, [NodeIssue("<model>", "trace", str(error), FIX_CONTROL_FLOW)])
    issues = [issue for node in prepared.graph.nodes if (issue := _check(prepared, node)) is not None]
    return ValidationReport(not issues, issues, str(prepared.meta.get("lowbit_capture", "")))


def _float(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    if meta is not None and hasattr(meta, "dtype"):
        return bool(meta.dtype.is_floating_point)
    val = node.meta.get("val")
    if isinstance(val, list | tuple) and val:
        val = val[0]
    return isinstance(val, torch.Tensor) and val.is_floating_point()


def _where(node: fx.Node) -> str:
    path, cls = stack_owner(node.meta)
    place = f" in '{path}' ({cls.rsplit('.', 1)[-1]})" if path else ""
    lines = re.findall(r'File "([^"]+)", line (\d+)', node.meta.get("stack_trace") or "")
    if lines:
        file, line = lines[-1]
        place += f" at {file.rsplit('/', 1)[-1]}:{line}"
    return place


def _op_name(target: Any) -> str:
    name = packet_name(target)
    if name is not None:
        return f"aten.{name}"
    return getattr(target, "__name__", str(target))


def _check(prepared: fx.GraphModule, node: fx.Node) -> NodeIssue | None:
    if node.op == "call_module":
        module = prepared.get_submodule(str(node.target))
        if isinstance(module, ops.ScaledDotProductAttention):
            return NodeIssue(
                str(node.target),
                "Attention",
                f"fused attention{_where(node)}: one output quantizer, the matmuls and softmax inside stay float",
                "build the model with eager attention (HuggingFace: attn_implementation='eager')",
            )
        if not has_op_type(module):
            return NodeIssue(
                str(node.target),
                type(module).__name__,
                f"leaf module {type(module).__name__} has no ONNX op type; quantsim cannot place quantizers",
                "register its type with core.graph.op_types.register_op_type, or let it be traced through",
            )
        return None
    if node.op not in ("call_function", "call_method"):
        return None
    target = node.target
    if isinstance(target, torch._ops.HigherOrderOperator):
        return NodeIssue(
            node.name,
            str(target),
            f"control-flow op{_where(node)}: ops inside its branches are not quantized",
            FIX_NEW_OP,
        )
    inplace = (node.op == "call_method" and str(target).endswith("_")) or is_inplace(target)
    inplace = inplace or bool(node.kwargs.get("inplace"))
    if inplace and not inplace_is_safe(node):
        return NodeIssue(
            node.name,
            _op_name(target),
            f"in-place op{_where(node)} writes into a model input or a tensor read later",
            "use the out-of-place form (y = x.relu() instead of x.relu_(); inplace=False)",
        )
    if not _float(node) or _is_data_movement(node):
        return None
    return NodeIssue(node.name, _op_name(target), f"float math{_where(node)} has no module", FIX_NEW_OP)


def _is_data_movement(node: fx.Node) -> bool:
    if node.op == "call_method":
        return str(node.target) in DATA_MOVEMENT_METHODS
    if packet_name(node.target) is not None:
        return is_data_movement(node.target)
    try:
        return node.target in DATA_MOVEMENT_FUNCTIONS
    except TypeError:  # unhashable target
        return False
