"""The built-in QAT loop for users without a training pipeline (the service's ``qat`` jobs).

>>> result = qat(sim, calib_inputs, epochs=2, lr=1e-4)          # label-free: distils sim.fp_model  # doctest: +SKIP
>>> result = qat(sim, images, labels=digits, epochs=5, lr=1e-3, checkpoint_dir="ckpt")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from core.errors import CancelledError, ConfigError
from core.ptq.bn_fold import unfoldable_weight_spec
from core.qat.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from core.qat.data import Schedule, as_train_data
from core.qat.distributed import resolve_context, wrap_model
from core.qat.losses import LossFn, output_tensors, resolve_loss
from core.qat.prepare import check_mode, current_setup, finish_qat, prepare_qat

Progress = Callable[[int, int, float, float | None], None]
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class QatResult:
    """What the loop did. ``epoch_losses`` are mean training losses per epoch (this run's steps)."""

    mode: str
    loss_name: str
    steps: int
    epochs: int
    final_loss: float
    epoch_losses: list[float] = field(default_factory=list)
    metric: float | None = None
    resumed_from_step: int | None = None
    checkpoints: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seconds_per_step: float = 0.0
    world_size: int = 1
    bn_reestimated: list[str] = field(default_factory=list)
    bn_folded: list[tuple[str, str]] = field(default_factory=list)


def _make_optimizer(
    name: str, params: list[torch.nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def lr_at(schedule: str, lr: float, step: int, total_steps: int) -> float:
    """Learning rate of step ``step`` (0-based): constant, or cosine decay from lr towards 0 at the end.

    A function of the step alone (no scheduler state), so a resumed run continues the same curve.
    """
    if schedule == "constant":
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / max(1, total_steps)))


def _check_args(epochs: int, lr: float, batch_size: int, checkpoint_every: int) -> None:
    for label, value in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("checkpoint_every", checkpoint_every),
    ):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{label} must be a positive integer, got {value!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be a positive number, got {lr!r}")


def qat(
    sim: Any,
    train_data: Any,
    epochs: int = 1,
    lr: float = 1e-4,
    *,
    labels: Any = None,
    loss: str | LossFn | None = None,
    batch_size: int = 32,
    mode: str | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    temperature: float = 1.0,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 100,
    resume: bool = True,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
    distributed: bool | None = None,
    seed: int = 0,
    eval_fn: Callable[[Any], float] | None = None,
    bn_reestimation_batches: int = 0,
    fold_bn: bool = False,
    finish: bool = True,
    weight_search: str = "once",
    lr_schedule: str = "constant",
) -> QatResult:
    """Fine-tune ``sim.model`` with fake quantization in the loop and return a QatResult.

    * Loss: supervised (``labels`` given; cross-entropy for integer labels, else MSE) or
      distillation from ``sim.fp_model`` (no labels; KL on the first output's logits, MSE for
      single-value outputs). ``loss`` picks one by name or is a callable(outputs, targets).
    * ``mode``: 'regular' or 'range_learning'; None keeps a previous prepare_qat's mode, else regular.
      ``weight_search`` ('once' or 'every_step') is passed to prepare_qat when it runs here.
    * ``lr_schedule``: 'constant' or 'cosine' (decay from ``lr`` towards 0 over all steps; see lr_at).
    * ``batch_size`` is per process; with DDP the global batch is batch_size × world size.
    * Checkpoints every ``checkpoint_every`` steps into ``checkpoint_dir`` (rank 0 writes); with
      ``resume`` the newest one is loaded and training continues at its step, reproducing the
      uninterrupted run (same seed, same world size).
    * ``progress(epoch, step, loss, metric)`` after each step (metric = ``eval_fn(sim)`` at an
      epoch's last step, else None); ``cancel()`` is checked before each step → CancelledError.
    * After training: BN statistics re-estimated over the first ``bn_reestimation_batches`` batches of
      ``batch_size`` samples (0 = off; ``result.bn_reestimated`` names the BNs); with ``fold_bn`` each
      BN that follows a Conv/Linear is folded into its weights *and* its weight quantizer's scale
      (core.ptq.bn_fold.fold_bn_into_quantizer_scale; needs per-channel symmetric weight quantizers,
      checked before training → ConfigError; ``result.bn_folded`` lists the pairs); then with
      ``finish`` the learned ranges are baked into plain encodings (finish_qat).
    """
    _check_args(epochs, lr, batch_size, checkpoint_every)
    if lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"unknown lr_schedule {lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    if not isinstance(bn_reestimation_batches, int) or bn_reestimation_batches < 0:
        raise ConfigError(f"bn_reestimation_batches must be an integer >= 0, got {bn_reestimation_batches!r}")
    if fold_bn:
        check_bn_foldable(sim)
    data = as_train_data(train_data, labels)
    setup = current_setup(sim)
    if mode is not None:
        check_mode(mode)
    if setup is None or (mode is not None and setup.mode != mode):
        setup = prepare_qat(sim, mode or "regular", weight_search=weight_search)
    ctx = resolve_context(distributed)
    schedule = Schedule(data.num_samples, batch_size, ctx.world_size, seed)
    total_steps = epochs * schedule.steps_per_epoch

    model = sim.model
    device = next(iter(model.parameters()), torch.empty(0)).device
    teacher = None if data.labels is not None else sim.fp_model.to(device).eval()
    num_classes = 2
    if teacher is not None:
        with torch.no_grad():
            probe = teacher(*data.take(torch.arange(1), device)[0])
        num_classes = int(output_tensors(probe)[0].shape[-1]) if output_tensors(probe)[0].dim() else 1
    loss_name, loss_fn = resolve_loss(
        loss,
        supervised=data.labels is not None,
        labels=data.labels,
        temperature=temperature,
        num_classes=num_classes,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("sim.model has no trainable parameters (all requires_grad=False)")
    opt = _make_optimizer(optimizer, params, lr, weight_decay)
    info = {
        "mode": setup.mode,
        "seed": seed,
        "batch_size": batch_size,
        "world_size": ctx.world_size,
        "num_samples": data.num_samples,
    }
    if lr_schedule != "constant":  # checkpoints of constant-rate runs keep resuming as before
        info["lr_schedule"] = lr_schedule

    start_step, resumed = 0, None
    if checkpoint_dir and resume:
        found = list_checkpoints(checkpoint_dir)
        if found:
            state = load_checkpoint(found[-1], model, opt)
            for key, value in info.items():
                if state.get(key) != value:
                    raise ConfigError(
                        f"checkpoint {found[-1]} was written with {key}={state.get(key)!r}, this run has {value!r}; "
                        "resume with the same settings or pass resume=False"
                    )
            start_step = resumed = int(state["step"])
    if resumed is None:
        torch.manual_seed(seed)

    wrapped = wrap_model(model, ctx, device)
    model.train()
    result = QatResult(setup.mode, loss_name, total_steps, epochs, float("nan"), world_size=ctx.world_size)
    result.resumed_from_step = resumed
    started = time.perf_counter()
    epoch_sum, epoch_count, order_epoch, order = 0.0, 0, -1, torch.empty(0)
    for step in range(start_step, total_steps):
        if cancel is not None and cancel():
            raise CancelledError(f"QAT cancelled before step {step + 1} of {total_steps}")
        epoch, in_epoch = divmod(step, schedule.steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = schedule.epoch_order(epoch), epoch
        inputs, batch_labels = data.take(schedule.indices(order, in_epoch, ctx.rank), device)
        if teacher is not None:
            with torch.no_grad():
                targets = teacher(*inputs)
        else:
            targets = batch_labels
        value = loss_fn(wrapped(*inputs), targets)
        if lr_schedule != "constant":
            for group in opt.param_groups:
                group["lr"] = lr_at(lr_schedule, lr, step, total_steps)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()  # regular mode: the step post-hook recomputes weight encodings here
        loss_value = float(value.detach())
        epoch_sum, epoch_count = epoch_sum + loss_value, epoch_count + 1
        result.final_loss = loss_value
        done = step + 1
        if checkpoint_dir and done % checkpoint_every == 0:
            if ctx.is_main:
                result.checkpoints.append(str(save_checkpoint(checkpoint_dir, done, model, opt, info)))
            ctx.barrier()
        metric = None
        if done % schedule.steps_per_epoch == 0:
            result.epoch_losses.append(ctx.mean(epoch_sum / epoch_count))
            epoch_sum, epoch_count = 0.0, 0
            if eval_fn is not None:
                model.eval()
                with torch.no_grad():
                    metric = result.metric = float(eval_fn(sim))
                model.train()
        if progress is not None:
            progress(epoch, done, loss_value, metric)
    ran = total_steps - start_step
    result.seconds = time.perf_counter() - started
    result.seconds_per_step = result.seconds / ran if ran else 0.0
    model.eval()
    if bn_reestimation_batches > 0:
        result.bn_reestimated = _reestimate_bn(sim, data, batch_size, bn_reestimation_batches, device)
    if fold_bn:
        from core.ptq.bn_fold import fold_bn_into_quantizer_scale

        result.bn_folded = fold_bn_into_quantizer_scale(sim)
    if finish:
        finish_qat(sim)
    return result


def _reestimate_bn(sim: Any, data: Any, batch_size: int, num_batches: int, device: torch.device) -> list[str]:
    from core.ptq.bn_reestimation import reestimate_bn_stats

    n = min(data.num_samples, num_batches * batch_size)
    batches = [data.take(torch.arange(i, min(i + batch_size, n)), device)[0] for i in range(0, n, batch_size)]
    handle = reestimate_bn_stats(sim.model, batches, num_batches=num_batches, batch_size=batch_size)
    return handle.layers


def check_bn_foldable(sim: Any) -> None:
    """Raise ConfigError unless BN can be folded into ``sim``'s weight quantizer scales after QAT:
    ``sim.model`` is a torch.fx GraphModule and every enabled weight quantizer is per-channel symmetric."""
    if not isinstance(sim.model, torch.fx.GraphModule):
        raise ConfigError("fold_bn needs sim.model to be a torch.fx GraphModule (a QuantSim-prepared model)")
    for name, module in sim.model.named_modules():
        quantizer = dict(getattr(module, "param_quantizers", None) or {}).get("weight")
        if quantizer is None or not quantizer.enabled:
            continue
        kind = unfoldable_weight_spec(quantizer.spec)
        if kind is not None:
            raise ConfigError(
                f"fold_bn: the weight quantizer of {name!r} is {kind}; folding BN into the quantizer scale "
                "needs per-channel symmetric weights (QuantSim(per_channel=True)), or pass fold_bn=False"
            )
