"""What the built-in QAT loop records while it trains: curves, the best evaluated weights, early stopping.

* **curves** — every ``log_every`` optimizer steps: the step, the mean training loss over those
  steps (averaged over ranks), the learning rate; every evaluation: the step and the metric.
* **best** — the evaluation metric is higher-is-better (accuracy, cosine); the weights of the best
  evaluation are kept (a CPU copy, also stored as ``best.safetensors`` in every checkpoint so a
  resumed run still has them) and restored at the end when ``keep_best``.
* **early stopping** — after ``patience`` evaluations in a row without improvement (0 = never).

The tracker's state travels in each checkpoint's state.json, so a resumed run continues the same
curves, best metric and patience count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file


@dataclass
class Curves:
    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_metric: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, list[Any]]:
        return {k: list(v) for k, v in self.__dict__.items()}


@dataclass
class Tracker:
    """Curves, best metric and patience of one run; ``state()``/``restore()`` go through checkpoints."""

    patience: int = 0
    curves: Curves = field(default_factory=Curves)
    best_metric: float | None = None
    best_step: int | None = None
    since_best: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    def record_loss(self, step: int, loss: float, lr: float) -> None:
        self.curves.step.append(step)
        self.curves.loss.append(loss)
        self.curves.lr.append(lr)

    def record_eval(self, step: int, metric: float, model: torch.nn.Module) -> bool:
        """Record an evaluation; True when it is the best so far (its weights are kept)."""
        self.curves.eval_step.append(step)
        self.curves.eval_metric.append(metric)
        if self.best_metric is None or metric > self.best_metric:
            self.best_metric, self.best_step, self.since_best = metric, step, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def state(self) -> dict[str, Any]:
        return {
            "curves": self.curves.to_json(),
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "since_best": self.since_best,
        }

    def restore(self, state: dict[str, Any] | None, folder: Path | None) -> None:
        """Continue from a checkpoint's ``tracking`` state and its ``best.safetensors`` (if any)."""
        if not state:
            return
        self.curves = Curves(**state.get("curves", {}))
        self.best_metric, self.best_step = state.get("best_metric"), state.get("best_step")
        self.since_best = int(state.get("since_best", 0))
        best = None if folder is None else folder / "best.safetensors"
        if best is not None and best.is_file():
            self.best_state = load_file(best)

    def extra_files(self) -> dict[str, dict[str, torch.Tensor]]:
        """Tensors to store with a checkpoint: the best weights (a resumed run can still restore them)."""
        return {} if self.best_state is None else {"best": self.best_state}
