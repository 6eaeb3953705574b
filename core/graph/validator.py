"""Model validator: which computations cannot be quantized, where, why, and what to do about it.

AIMET's validator answers "reused module" / "functional op" with a yes/no in a log. Ours prepares the model
(reuse and most functional math are fixed by preparation, so they are not problems) and reports what is
left, per node, with the source line and a fix-it message a user can act on (export flags, opset, the op
in their code) — never lowbit's source. Ops without a quantized module run in float and are listed
(``float_ops``); only a model that cannot be captured at all gives ``ok=False``, with the tracers'
reasons — never a stack trace.

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
    "lowbit has no quantized module for this op: it runs in float (unquantized) and the rest of the model "
    "is quantized. To quantize it too, export the model so that the op is written as a supported one "
    "(another torch.onnx opset, torch.export instead of the TorchScript exporter, or the op replaced in "
    "your model code by a standard layer)"
)
FIX_CONTROL_FLOW = (
    "make the model traceable: rewrite data-dependent control flow with torch.cond or make it depend on "
    "shapes only, then export again (Python API: or wrap the part in a leaf module registered with "
    "core.graph.op_types.register_op_type, traced as one opaque op)"
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
    """Outcome of :func:`validate_model`.

    ``ok`` is False only when the model cannot be prepared (captured) at all: ``issues`` then says why.
    ``float_ops`` lists computations that have no quantized module and will run in float while the rest
    of the model is quantized; ``notes`` are advice that changes nothing about the verdict (a fused
    attention op gets one output quantizer). Both leave ``ok`` True.
    """

    ok: bool
    issues: list[NodeIssue] = field(default_factory=list)
    capture: str = ""
    float_ops: list[NodeIssue] = field(default_factory=list)
    notes: list[NodeIssue] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"ok", "capture", "issues", "float_ops", "notes"}`` (lists of node dicts)."""
        return {
            "ok": self.ok,
            "capture": self.capture,
            "issues": [asdict(i) for i in self.issues],
            "float_ops": [asdict(i) for i in self.float_ops],
            "notes": [asdict(i) for i in self.notes],
        }

    def float_summary(self) -> str:
        """``"N ops left in float: aten.cumsum (2), aten.erfinv"`` ('' when none)."""
        return float_ops_summary([i.op for i in self.float_ops])

    def format_table(self) -> str:
        """A plain-text table, one row per finding (for the CLI and logs)."""
        head = f"model captured with {self.capture}" if self.capture else "model could not be captured"
        findings = [*self.issues, *self.float_ops, *self.notes]
        if not findings:
            return f"{head}: every computation can be quantized."
        if self.ok:
            summary = self.float_summary() or "every computation can be quantized"
            lines = [f"{head}: {summary}" + (f"; {len(self.notes)} note(s)" if self.notes else "")]
        else:
            lines = [f"{head}: {len(self.issues)} blocking issue(s)"]
        rows = [("node", "op", "problem"), *((i.node, i.op, i.problem) for i in findings)]
        widths = [min(48, max(len(r[c]) for r in rows)) for c in range(2)]
        for index, row in enumerate(rows):
            lines.append(
                " | ".join(
                    [row[0][: widths[0]].ljust(widths[0]), row[1][: widths[1]].ljust(widths[1]), row[2]]
                )
            )
            if index == 0:
                lines.append("-+-".join(["-" * widths[0], "-" * widths[1], "-" * 7]))
            else:
                lines.append(" " * (widths[0] + 3) + f"fix: {findings[index - 1].fix}")
        return "\n".join(lines)


def float_ops_summary(ops: list[str]) -> str:
    """``"3 ops left in float: aten.cumsum (2), aten.erfinv"`` for a list of op names ('' when empty)."""
    if not ops:
        return ""
    counts: dict[str, int] = {}
    for op in ops:
        counts[op] = counts.get(op, 0) + 1
    names = ", ".join(f"{op} ({n})" if n > 1 else op for op, n in counts.items())
    return f"{len(ops)} op{'s' if len(ops) != 1 else ''} left in float: {names}"


def validate_model(model: nn.Module | ExportedProgram, example_inputs: tuple[Any, ...]) -> ValidationReport:
    """Prepare ``model`` and report, per node, what will not be quantized and why, with a fix-it message.

    Blocking (``ok=False``): a model that cannot be captured (one issue naming the tracers' failures).
    Left in float (``float_ops``): float math with no quantizable module, control-flow ops, in-place
    writes that cannot become modules. Notes: fused attention (one quantizer for the whole op). Math on
    non-float tensors (index arithmetic, masks) and data movement are fine and not reported.
    """
    return check_model(model, example_inputs)[1]


def check_model(
    model: nn.Module | ExportedProgram, example_inputs: tuple[Any, ...]
) -> tuple[fx.GraphModule | None, ValidationReport]:
    """Prepare once and report: ``(prepared graph or None when it cannot be captured, report)``.

    The one prepare path of ``lowbit validate``, ``lowbit quantize`` and service jobs: they capture the
    same source (``LoadedModel.graph_source``) the same way, so they reach the same verdict.
    """
    try:
        prepared = prepare_model(model, example_inputs)
    except LowbitError as error:
        return None, ValidationReport(False, [NodeIssue("<model>", "trace", str(error), FIX_CONTROL_FLOW)])
    return prepared, inspect_prepared(prepared)


def inspect_prepared(prepared: fx.GraphModule) -> ValidationReport:
    """The report of :func:`validate_model` for an already prepared graph (no second capture)."""
    issues: list[NodeIssue] = []
    float_ops: list[NodeIssue] = []
    notes: list[NodeIssue] = []
    for node in prepared.graph.nodes:
        finding = _check(prepared, node)
        if finding is None:
            continue
        kind, issue = finding
        {"issue": issues, "float": float_ops, "note": notes}[kind].append(issue)
    return ValidationReport(
        not issues, issues, str(prepared.meta.get("lowbit_capture", "")), float_ops, notes
    )


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


def _check(prepared: fx.GraphModule, node: fx.Node) -> tuple[str, NodeIssue] | None:
    if node.op == "call_module":
        module = prepared.get_submodule(str(node.target))
        if isinstance(module, ops.ScaledDotProductAttention):
            return "note", NodeIssue(
                str(node.target),
                "Attention",
                f"fused attention{_where(node)}: one output quantizer, the matmuls and softmax inside stay float",
                "build the model with eager attention (HuggingFace: attn_implementation='eager') and export "
                "again to quantize the attention matmuls too",
            )
        if not has_op_type(module):
            return "issue", NodeIssue(
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
        return "float", NodeIssue(
            node.name,
            str(target),
            f"control-flow op{_where(node)}: runs in float, ops inside its branches are not quantized",
            FIX_CONTROL_FLOW,
        )
    inplace = (node.op == "call_method" and str(target).endswith("_")) or is_inplace(target)
    inplace = inplace or bool(node.kwargs.get("inplace"))
    if inplace and not inplace_is_safe(node) and _float(node) and not _is_data_movement(node):
        return "float", NodeIssue(
            node.name,
            _op_name(target),
            f"in-place op{_where(node)} writes into a model input or a tensor read later: runs in float",
            "use the out-of-place form in the model (y = x.relu() instead of x.relu_(); inplace=False) "
            "and export again",
        )
    if not _float(node) or _is_data_movement(node):
        return None
    return "float", NodeIssue(
        node.name, _op_name(target), f"float math{_where(node)} has no quantized module", FIX_NEW_OP
    )


def _is_data_movement(node: fx.Node) -> bool:
    if node.op == "call_method":
        return str(node.target) in DATA_MOVEMENT_METHODS
    if packet_name(node.target) is not None:
        return is_data_movement(node.target)
    try:
        return node.target in DATA_MOVEMENT_FUNCTIONS
    except TypeError:  # unhashable target
        return False
