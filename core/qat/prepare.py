"""Putting a QuantSim into a trainable state: regular QAT or range learning.

**regular** — weights, biases and other parameters train; activation encodings stay as calibrated;
weight encodings follow the weights. They are recomputed after *every optimizer step* by a global
``torch.optim`` step post-hook that fires only for optimizers holding parameters of ``sim.model``,
so the user's own training loop needs no extra call (AIMET v2 requires an explicit
``compute_param_encodings`` there and silently trains against stale grids otherwise). Recomputing
after the step rather than in every forward costs one pass over the weights per step, not one per
forward (gradient accumulation, evaluation), and the forward keeps the fused fake-quant kernel.

**range_learning** — every enabled, calibrated, non-frozen integer quantizer (weights and
activations) becomes a LearnableQuantizer: scale (and asymmetric zero point) are nn.Parameters with
LSQ gradients (core/quant/learnable.py); no recomputation happens, the grid is learned.

>>> setup = prepare_qat(sim, mode="regular")       # doctest: +SKIP
>>> opt = torch.optim.SGD(sim.model.parameters(), lr=1e-3)   # doctest: +SKIP
>>> ...; opt.step()   # weight encodings now match the new weights  # doctest: +SKIP
>>> finish_qat(sim)   # plain int32 encodings again, ready for export  # doctest: +SKIP
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.hooks import RemovableHandle

from core.errors import ConfigError, LowbitError
from core.quant.learnable import LearnableQuantizer

QatMode = Literal["regular", "range_learning"]
MODES: tuple[str, ...] = ("regular", "range_learning")
_SETUP_ATTR = "_lowbit_qat_setup"


@dataclass
class QatSetup:
    """What prepare_qat changed; ``learned`` lists the quantizers whose range is trained."""

    mode: str
    learned: list[str] = field(default_factory=list)
    _hook: RemovableHandle | None = None

    def remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown QAT mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def current_setup(sim: Any) -> QatSetup | None:
    """The QatSetup of the last prepare_qat on this sim, or None."""
    return getattr(sim, _SETUP_ATTR, None)


def prepare_qat(sim: Any, mode: str = "regular") -> QatSetup:
    """Make ``sim.model`` trainable in ``mode`` ('regular' or 'range_learning') and return the setup.

    Calling it again switches mode (range-learned encodings are baked first). Raises LowbitError
    when range learning meets an enabled quantizer that has no encoding yet.
    """
    check_mode(mode)
    finish_qat(sim)
    setup = QatSetup(mode=mode)
    if mode == "regular":
        # The grid of each weight must match its current values before the first step, too.
        sim.compute_param_encodings()
        setup._hook = _register_weight_encoding_hook(sim)
    else:
        for name, quantizer in sim.quantizers().items():
            if (
                quantizer is None
                or not quantizer.enabled
                or quantizer.frozen
                or quantizer.spec.dtype != "int"
            ):
                continue
            if quantizer.encoding is None:
                raise LowbitError(
                    f"quantizer {name!r} has no encoding; run sim.compute_encodings(data) before range learning"
                )
            quantizer.enable_range_learning()
            setup.learned.append(name)
    setattr(sim, _SETUP_ATTR, setup)
    return setup


def finish_qat(sim: Any) -> None:
    """Undo prepare_qat's training state: remove the hook, bake learned ranges into int32 encodings."""
    setup = current_setup(sim)
    if setup is not None:
        setup.remove_hook()
    for quantizer in sim.quantizers().values():
        if isinstance(quantizer, LearnableQuantizer):
            quantizer.disable_range_learning()
    if setup is not None:
        delattr(sim, _SETUP_ATTR)


def _register_weight_encoding_hook(sim: Any) -> RemovableHandle:
    sim_ref = weakref.ref(sim)
    model_ref: weakref.ReferenceType[nn.Module] = weakref.ref(sim.model)

    def after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        live_sim, model = sim_ref(), model_ref()
        if live_sim is None or model is None:
            return
        owned = {id(p) for p in model.parameters()}
        if any(id(p) in owned for group in optimizer.param_groups for p in group["params"]):
            with torch.no_grad():
                live_sim.compute_param_encodings()

    return register_optimizer_step_post_hook(after_step)
