"""The metric a QAT job tracks while training (higher is better): top-1 accuracy of the first output
on evaluation data with labels, else the cosine similarity of the outputs to the FP32 model's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

EVAL_BATCH = 256


def _first(output: Any) -> torch.Tensor:
    while isinstance(output, tuple | list):
        output = output[0]
    return output  # type: ignore[no-any-return]


def _outputs(module: Any, data: Any, device: str) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat(
            [
                _first(module(*(t.to(device) for t in batch))).float().cpu()
                for batch in data.batches(EVAL_BATCH)
            ]
        )


def make_eval_fn(data: Any, fp_module: Any, device: str) -> Callable[[Any], float]:
    """``eval_fn(sim)`` for core.qat.qat over ``data`` (core.io.CalibrationData)."""
    if data.labels is not None:
        labels = torch.as_tensor(data.labels).reshape(-1)

        def accuracy(sim: Any) -> float:
            out = _outputs(sim.model, data, device)
            return float((out.reshape(len(out), -1).argmax(1) == labels[: len(out)]).float().mean())

        return accuracy
    reference = _outputs(fp_module, data, device).flatten(1)

    def cosine(sim: Any) -> float:
        out = _outputs(sim.model, data, device).flatten(1)
        return float(torch.nn.functional.cosine_similarity(out, reference, dim=1).mean())

    return cosine
