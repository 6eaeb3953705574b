"""Putting a QuantSim into a trainable state: regular QAT or range learning.

**regular** — weights, biases and other parameters train; activation encodings stay as calibrated;
weight encodings follow the weights. They are recomputed after *every optimizer step* by a global
``torch.optim`` step post-hook that fires only for optimizers holding parameters of ``sim.model``,
so the user's own training loop needs no extra call (AIMET v2 requires an explicit
``compute_param_encodings`` there and silently trains against stale grids otherwise). Recomputing
after the step rather than in every forward costs one pass over the weights per step, not one per
forward (gradient accumulation, evaluation). With ``weight_search="once"`` (default) the weight
scheme's full range search runs at prepare time and each step follows the weights' min/max with the
clip ratios it chose (core/qat/weight_ranges.py; exact for min-max); ``"every_step"`` re-runs the
full search after every step.

**range_learning** — every enabled, calibrated, non-frozen integer quantizer (weights and
activations) becomes a LearnableQuantizer: scale (and asymmetric zero point) are nn.Parameters with
LSQ gradients (core/quant/learnable.py); no recomputation happens, the grid is learned. Their
scales and zero points are pooled into one shared parameter bank per sim (two nn.Parameters instead of
one or two per quantizer: an optimizer's per-parameter cost stays small; state dict keys unchanged;
core/quant/learnable_bank.py); finish_qat gives each quantizer its own tensors back.

In both modes quantized ReLU/ReLU6/Hardtanh modules run fused with their output quantizer while
training on CPU (core/qat/fused_activations.py: same values and gradients, one pass fewer each way).

>>> setup = prepare_qat(sim, mode="regular")       # doctest: +SKIP
>>> opt = torch.optim.SGD(sim.model.parameters(), lr=1e-3)   # doctest: +SKIP
>>> ...; opt.step()   # weight encodings now match the new weights  # doctest: +SKIP
>>> finish_qat(sim)   # plain int32 encodings again, ready for export  # doctest: +SKIP
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.hooks import RemovableHandle

from core.errors import ConfigError, LowbitError
from core.qat.fused_activations import fuse_activations, unfuse_activations
from core.qat.weight_ranges import WEIGHT_SEARCH, WeightRangeFollower
from core.quant.learnable import LearnableQuantizer
from core.quant.learnable_bank import pool_learnable_quantizers, unpool_learnable_quantizers

QatMode = Literal["regular", "range_learning"]
MODES: tuple[str, ...] = ("regular", "range_learning")
_SETUP_ATTR = "_lowbit_qat_setup"


@dataclass
class QatSetup:
    """What prepare_qat changed: ``learned`` lists the quantizers whose range is trained, ``fused`` the
    activations that run fused with their output quantizer while training (core/qat/fused_activations.py)."""

    mode: str
    learned: list[str] = field(default_factory=list)
    fused: list[str] = field(default_factory=list)
    weights: WeightRangeFollower | None = None
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


def prepare_qat(sim: Any, mode: str = "regular", weight_search: str = "once") -> QatSetup:
    """Make ``sim.model`` trainable in ``mode`` ('regular' or 'range_learning') and return the setup.

    Calling it again switches mode (range-learned encodings are baked first). Raises LowbitError
    when range learning meets an enabled quantizer that has no encoding yet. ``weight_search``
    (regular mode): 'once' runs the weight scheme's search now and then follows min/max with its clip
    ratios after each step; 'every_step' runs the full search after each step.
    """
    check_mode(mode)
    if weight_search not in WEIGHT_SEARCH:
        raise ConfigError(
            f"unknown weight_search {weight_search!r}; choose one of {', '.join(WEIGHT_SEARCH)}"
        )
    finish_qat(sim)
    setup = QatSetup(mode=mode)
    if mode == "regular":
        # The grid of each weight must match its current values before the first step, too.
        setup.weights = WeightRangeFollower(sim)
        follow = setup.weights.follow if weight_search == "once" else sim.compute_param_encodings
        setup._hook = _register_weight_encoding_hook(sim, follow)
    else:
        learnables = []
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
            learnables.append(quantizer.enable_range_learning())
            setup.learned.append(name)
        pool_learnable_quantizers(learnables)
    setup.fused = fuse_activations(sim.model)
    setattr(sim, _SETUP_ATTR, setup)
    return setup


def finish_qat(sim: Any) -> None:
    """Undo prepare_qat's training state: remove the hook, bake learned ranges into int32 encodings."""
    setup = current_setup(sim)
    if setup is not None:
        setup.remove_hook()
    unfuse_activations(sim.model)
    unpool_learnable_quantizers(sim.model)
    for quantizer in sim.quantizers().values():
        if isinstance(quantizer, LearnableQuantizer):
            quantizer.disable_range_learning()
    if setup is not None:
        delattr(sim, _SETUP_ATTR)


def _register_weight_encoding_hook(sim: Any, follow: Callable[[], None]) -> RemovableHandle:
    sim_ref = weakref.ref(sim)
    model_ref: weakref.ReferenceType[nn.Module] = weakref.ref(sim.model)
    # A bound method of the sim (or of its follower, which holds the sim) would keep the sim alive.
    follow_ref = weakref.WeakMethod(follow)  # type: ignore[arg-type]

    # Whether an optimizer holds parameters of the model, per optimizer and its parameter count
    # (walking model.parameters() every step costs more than the update itself on small models).
    holds: weakref.WeakKeyDictionary[torch.optim.Optimizer, tuple[int, bool]] = weakref.WeakKeyDictionary()

    def after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        live_sim, model = sim_ref(), model_ref()
        if live_sim is None or model is None:
            return
        count = sum(len(group["params"]) for group in optimizer.param_groups)
        known = holds.get(optimizer)
        if known is None or known[0] != count:
            owned = {id(p) for p in model.parameters()}
            known = holds[optimizer] = (
                count,
                any(id(p) in owned for group in optimizer.param_groups for p in group["params"]),
            )
        if known[1]:
            update = follow_ref()
            if update is not None:
                with torch.no_grad():
                    update()

    return register_optimizer_step_post_hook(after_step)
