"""The engine's view of a loaded model: an eval-mode torch module plus what is known about its I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.errors import ModelLoadError


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for the engine.

    ``module`` is in eval mode. ``example_inputs`` holds one tensor per model input shaped like
    the calibration data when it was given to load_model, else as declared (core.io.example_shapes),
    dynamic dimensions small (2 for ONNX: an export traced at 1 lets broadcasting hide them; values
    are zeros for ONNX/pt2 without samples, or the program's sample inputs). ``source_format`` is ``"pt2"``, ``"onnx"`` or ``"module"``;
    ``path`` is the file it came from (None for a Python module).

    Example::

        loaded = LoadedModel.from_module(net, (torch.zeros(1, 3, 32, 32),))
        outputs = loaded.module(*loaded.example_inputs)
    """

    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    source_format: str
    path: Path | None = None
    # The torch.export program a .pt2 came from: graph capture rebuilds modules from it directly
    # (``module`` is then its ATen-level ``.module()``, which cannot be re-exported).
    program: Any = None
    # Per input, the axes the file declares dynamic (batch, sequence...): data may differ there.
    dynamic_axes: tuple[tuple[int, ...], ...] = ()
    # Input and output name -> {axis: dimension name} as the file declares them (an ONNX dim_param, a
    # torch.export symbol): exports keep exactly these dimensions dynamic. Empty: dimension 0 of every
    # input and output is the batch (a Python module declares nothing).
    dynamic_dims: Mapping[str, Mapping[int, str]] = field(default_factory=dict)

    @property
    def graph_source(self) -> Any:
        """What core.graph.prepare_model should capture: the program when there is one, else the module."""
        return self.program if self.program is not None else self.module

    @classmethod
    def from_module(
        cls,
        module: torch.nn.Module,
        example_inputs: Sequence[torch.Tensor] | torch.Tensor,
        input_names: list[str] | None = None,
        output_names: list[str] | None = None,
    ) -> LoadedModel:
        """Wrap a plain ``nn.Module`` built in Python (the module is switched to eval mode).

        ``example_inputs`` is one tensor or a sequence of tensors (one per forward argument).
        Input names default to ``input`` (one input) or ``input_0, input_1, ...``; output names to
        ``output`` or ``output_0, ...`` after one forward pass on the examples.
        """
        if not isinstance(module, torch.nn.Module):
            raise ModelLoadError(f"expected a torch.nn.Module, got {type(module).__name__}")
        examples = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
        if not examples or not all(isinstance(t, torch.Tensor) for t in examples):
            raise ModelLoadError("example_inputs must be a tensor or a non-empty sequence of tensors")
        module.eval()
        if input_names is None:
            input_names = ["input"] if len(examples) == 1 else [f"input_{i}" for i in range(len(examples))]
        if len(input_names) != len(examples):
            raise ModelLoadError(f"{len(input_names)} input names given for {len(examples)} example inputs")
        if output_names is None:
            with torch.no_grad():
                outputs = module(*examples)
            count = len(outputs) if isinstance(outputs, (tuple, list)) else 1
            output_names = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
        return cls(module, examples, list(input_names), list(output_names), "module", None)
