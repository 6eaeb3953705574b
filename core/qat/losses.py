"""Training losses of the built-in QAT loop.

With labels: ``cross_entropy`` (integer labels, the default for them) or ``mse``. Without labels
the FP32 model is the teacher (label-free QAT): ``kl`` — KL(teacher ‖ student) of the softmax of the
first output over its last dimension at temperature T, multiplied by T² as usual in distillation
(the default for outputs with more than one class) — or ``mse`` over all outputs. A callable
``loss(outputs, targets) -> scalar tensor`` is used as given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from core.errors import ConfigError

LossFn = Callable[[Any, Any], torch.Tensor]
SUPERVISED = ("cross_entropy", "mse")
DISTILLATION = ("kl", "mse")


def output_tensors(outputs: Any) -> list[torch.Tensor]:
    """Model outputs as a flat list of tensors (tensor, tuple/list, or dict values, nested)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, Mapping):
        outputs = list(outputs.values())
    if isinstance(outputs, Sequence) and not isinstance(outputs, str):
        return [t for item in outputs for t in output_tensors(item)]
    return []


def _cross_entropy(outputs: Any, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output_tensors(outputs)[0], labels.long())


def _mse(outputs: Any, targets: Any) -> torch.Tensor:
    pairs = list(zip(output_tensors(outputs), output_tensors(targets), strict=True))
    return sum((F.mse_loss(o.float(), t.float()) for o, t in pairs), torch.zeros(())) / len(pairs)


def _kl(temperature: float) -> LossFn:
    def loss(outputs: Any, teacher: Any) -> torch.Tensor:
        student, target = output_tensors(outputs)[0].float(), output_tensors(teacher)[0].float()
        log_p = F.log_softmax(student / temperature, dim=-1).flatten(0, -2)
        log_q = F.log_softmax(target / temperature, dim=-1).flatten(0, -2)
        return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * temperature**2

    return loss


def resolve_loss(
    loss: str | LossFn | None,
    *,
    supervised: bool,
    labels: torch.Tensor | None,
    temperature: float = 1.0,
    num_classes: int = 2,
) -> tuple[str, LossFn]:
    """(name, function) for the requested loss; ConfigError names the accepted choices."""
    if callable(loss):
        return getattr(loss, "__name__", "custom"), loss
    if supervised:
        name = loss or ("cross_entropy" if labels is not None and not labels.is_floating_point() else "mse")
        if name not in SUPERVISED:
            raise ConfigError(
                f"unknown supervised loss {name!r}; choose one of {', '.join(SUPERVISED)} or a callable"
            )
        return name, _cross_entropy if name == "cross_entropy" else _mse
    name = loss or ("kl" if num_classes > 1 else "mse")
    if name not in DISTILLATION:
        raise ConfigError(
            f"unknown distillation loss {name!r} (no labels given); choose one of {', '.join(DISTILLATION)} or a callable"
        )
    if temperature <= 0:
        raise ConfigError(f"distillation temperature must be > 0, got {temperature}")
    return name, _kl(temperature) if name == "kl" else _mse
