"""Label-free quality metrics: how close quantized outputs are to FP32 outputs.

``sqnr_db(ref, test) = 10·log10(Σref² / Σ(ref − test)²)`` (capped at 200 dB for identical tensors);
``cosine(ref, test)`` = mean over samples of the cosine similarity of the flattened outputs.
``OutputAgreement`` caches the FP32 outputs of the evaluation batches once and scores any model
(higher is better), the analyzer's evaluation function when the user gives none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from core.errors import ConfigError

EvalFn = Callable[[nn.Module], float]
MAX_SQNR_DB = 200.0
LABEL_FREE_METRICS = ("cosine", "sqnr")


def flat_outputs(outputs: Any) -> torch.Tensor:
    """All tensor outputs of one batch as (batch, features) float32 (non-batched outputs are skipped)."""
    tensors = [t for t in _tensors(outputs) if t.dim() >= 1 and t.is_floating_point()]
    if not tensors:
        raise ConfigError("the model returned no floating-point tensor to compare")
    batch = tensors[0].shape[0]
    return torch.cat([t.detach().float().reshape(batch, -1) for t in tensors if t.shape[0] == batch], dim=1)


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    noise = (reference.double() - test.double()).pow(2).sum()
    signal = reference.double().pow(2).sum()
    if noise <= 0:
        return MAX_SQNR_DB
    if signal <= 0:
        return -MAX_SQNR_DB
    return min(MAX_SQNR_DB, float(10 * torch.log10(signal / noise)))


def cosine(reference: torch.Tensor, test: torch.Tensor) -> float:
    ref, out = reference.double().reshape(reference.shape[0], -1), test.double().reshape(test.shape[0], -1)
    return float(nn.functional.cosine_similarity(ref, out, dim=1, eps=1e-12).mean())


class OutputAgreement:
    """Evaluation function comparing a model's outputs on fixed batches with the FP32 model's."""

    def __init__(
        self, fp_model: nn.Module, batches: Sequence[tuple[torch.Tensor, ...]], metric: str = "cosine"
    ):
        if metric not in LABEL_FREE_METRICS:
            raise ConfigError(
                f"unknown label-free metric {metric!r}; choose one of {', '.join(LABEL_FREE_METRICS)}"
            )
        if not batches:
            raise ConfigError("the label-free metric needs at least one evaluation batch")
        self.metric = metric
        self.batches = list(batches)
        with torch.no_grad():
            self.reference = torch.cat([flat_outputs(fp_model(*b)) for b in self.batches])

    def outputs(self, model: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([flat_outputs(model(*b)) for b in self.batches])

    def __call__(self, model: nn.Module) -> float:
        out = self.outputs(model)
        return cosine(self.reference, out) if self.metric == "cosine" else sqnr_db(self.reference, out)


def _tensors(outputs: Any) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, Mapping):
        outputs = list(outputs.values())
    if isinstance(outputs, Sequence) and not isinstance(outputs, str):
        return [t for item in outputs for t in _tensors(item)]
    return []
