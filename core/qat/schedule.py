"""Optimizers and learning-rate schedules of the built-in QAT loop.

The rate is a function of the step alone (no scheduler state), so a resumed run continues the same
curve: linear warm-up over ``warmup_steps`` from lr/warmup to lr, then

* ``constant`` — lr;
* ``cosine`` — lr · ½(1 + cos(π t / T)) over the T steps after warm-up, towards 0 at the end;
* ``step`` — lr · gamma^⌊t / step_size⌋ (``step_size`` 0 = a third of the steps after warm-up).

>>> lr_at("step", 1.0, 5, 10, step_size=5, gamma=0.5)
0.5
"""

from __future__ import annotations

import math

import torch

from core.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "step")


def make_optimizer(
    name: str, params: list[torch.nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (momentum 0.9) over ``params``; ConfigError naming the choices otherwise."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def check_schedule(schedule: str, warmup_steps: int = 0, step_size: int = 0, gamma: float = 0.1) -> None:
    if schedule not in LR_SCHEDULES:
        raise ConfigError(f"unknown lr_schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    if not isinstance(step_size, int) or step_size < 0:
        raise ConfigError(f"lr_step_size must be an integer >= 0, got {step_size!r}")
    if not (0 < gamma <= 1):
        raise ConfigError(f"lr_gamma must be in (0, 1], got {gamma!r}")


def lr_at(
    schedule: str,
    lr: float,
    step: int,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    step_size: int = 0,
    gamma: float = 0.1,
) -> float:
    """Learning rate of step ``step`` (0-based) of ``total_steps``; see the module docstring."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    t, span = step - warmup_steps, max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * t / span))
    if schedule == "step":
        return lr * gamma ** (t // (step_size or max(1, span // 3)))
    return lr
