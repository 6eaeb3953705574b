"""ONNX op type → conversion handler. A new op is a handler decorated with :func:`converts`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.io.onnx_convert.context import NodeContext
    from core.io.onnx_convert.values import Value

Handler = Callable[["NodeContext"], "list[Value | None]"]
HANDLERS: dict[str, Handler] = {}


def converts(*op_types: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the converter of ``op_types`` (ONNX default domain)."""

    def register(handler: Handler) -> Handler:
        for op_type in op_types:
            HANDLERS[op_type] = handler
        return handler

    return register


def supported_ops() -> list[str]:
    """Sorted ONNX op types the converter handles."""
    from core.io.onnx_convert import (  # noqa: F401
        ops_activation,
        ops_elementwise,
        ops_index,
        ops_nn,
        ops_pool,
        ops_shape,
    )

    return sorted(HANDLERS)
