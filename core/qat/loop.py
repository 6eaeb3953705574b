"""The built-in QAT loop for users without a training pipeline (the service's ``qat`` jobs).

>>> result = qat(sim, calib_inputs, epochs=2, lr=1e-4)          # label-free: distils sim.fp_model  # doctest: +SKIP
>>> result = qat(sim, images, labels=digits, epochs=5, lr=1e-3, checkpoint_dir="ckpt")  # doctest: +SKIP
>>> result = qat(sim, StreamSource(plan, open_shard, epochs=3), optimizer="adamw",
...              lr_schedule="cosine", warmup_steps=100, eval_fn=accuracy, eval_every=200)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from core.errors import CancelledError, ConfigError
from core.ptq.bn_fold import unfoldable_weight_spec
from core.qat.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from core.qat.data import InMemorySource, as_train_data
from core.qat.distributed import resolve_context, wrap_model
from core.qat.losses import LossFn, output_tensors, resolve_loss
from core.qat.prepare import check_mode, current_setup, finish_qat, prepare_qat
from core.qat.schedule import LR_SCHEDULES, OPTIMIZERS, check_schedule, lr_at, make_optimizer
from core.qat.stream import StreamSource
from core.qat.tracking import Tracker

Progress = Callable[[int, int, float, float | None], None]
__all__ = ["LR_SCHEDULES", "OPTIMIZERS", "QatResult", "lr_at", "qat"]


@dataclass
class QatResult:
    """What the loop did. ``epoch_losses`` are mean training losses per epoch (this run's steps);
    ``curves`` the loss/lr/eval curves (core/qat/tracking.py)."""

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
    curves: dict[str, list[Any]] = field(default_factory=dict)
    best_metric: float | None = None
    best_step: int | None = None
    stopped_early_at: int | None = None
    samples_per_second: float = 0.0


def _check_args(epochs: int, lr: float, batch_size: int, checkpoint_every: int, **more: int) -> None:
    for label, value in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("checkpoint_every", checkpoint_every),
        *more.items(),
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
    warmup_steps: int = 0,
    lr_step_size: int = 0,
    lr_gamma: float = 0.1,
    accumulate_steps: int = 1,
    clip_grad_norm: float | None = None,
    eval_every: int = 0,
    keep_best: bool = False,
    early_stopping_patience: int = 0,
    log_every: int = 10,
    amp: bool = False,
    freeze_bn: bool = False,
    on_start: Callable[[int, int], None] | None = None,
) -> QatResult:
    """Fine-tune ``sim.model`` with fake quantization in the loop and return a QatResult.

    * Data: a tensor / tuple of tensors / name → array mapping / CalibrationData held in memory
      (``labels`` optional), or a :class:`~core.qat.stream.StreamSource` streaming shards.
    * Loss: supervised (labels given; cross-entropy for integer labels, else MSE) or distillation
      from ``sim.fp_model`` (no labels; KL on the first output's logits, MSE for single-value
      outputs). ``loss`` picks one by name or is a callable(outputs, targets).
    * ``mode``: 'regular' or 'range_learning'; None keeps a previous prepare_qat's mode, else regular.
      ``weight_search`` ('once' or 'every_step') is passed to prepare_qat when it runs here.
    * Optimizer ``adam``/``adamw``/``sgd`` with ``weight_decay``; ``lr_schedule`` 'constant',
      'cosine' or 'step' after ``warmup_steps`` of linear warm-up (core/qat/schedule.py). A step is
      an optimizer step over ``accumulate_steps`` micro-batches of ``batch_size`` (per process; with
      DDP the global batch is batch_size × world size × accumulate_steps). ``clip_grad_norm``
      clips the gradients' global norm; ``amp`` runs forwards in bf16 autocast on CUDA (ignored on
      CPU); ``freeze_bn`` keeps BatchNorm statistics fixed while training (then results do not
      depend on how the batch is split over ranks).
    * Checkpoints every ``checkpoint_every`` steps into ``checkpoint_dir`` (rank 0 writes); with
      ``resume`` the newest one is loaded and training continues at its step, reproducing the
      uninterrupted run (same seed and data layout).
    * ``eval_fn(sim)`` (higher is better) runs every ``eval_every`` steps (0: at each epoch's end)
      and at the last step; ``keep_best`` restores the best evaluated weights at the end;
      ``early_stopping_patience`` stops after that many evaluations without improvement. Every
      ``log_every`` steps the mean loss and the learning rate go to ``result.curves``.
    * ``progress(epoch, step, loss, metric)`` after each step (metric = the evaluation at that step,
      else None); ``cancel()`` is checked before each step → CancelledError; ``on_start(first step,
      total steps)`` once before training (after a resume, first step > 0).
    * After training: BN statistics re-estimated over the first ``bn_reestimation_batches`` batches
      of the training data (0 = off; ``result.bn_reestimated`` names the BNs); with ``fold_bn`` each
      BN that follows a Conv/Linear is folded into its weights *and* its weight quantizer's scale
      (core.ptq.bn_fold.fold_bn_into_quantizer_scale; needs per-channel symmetric weight quantizers,
      checked before training → ConfigError; ``result.bn_folded`` lists the pairs); then with
      ``finish`` the learned ranges are baked into plain encodings (finish_qat).
    """
    _check_args(
        epochs, lr, batch_size, checkpoint_every, accumulate_steps=accumulate_steps, log_every=log_every
    )
    check_schedule(lr_schedule, warmup_steps, lr_step_size, lr_gamma)
    for label, value in (
        ("bn_reestimation_batches", bn_reestimation_batches),
        ("eval_every", eval_every),
        ("early_stopping_patience", early_stopping_patience),
    ):
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"{label} must be an integer >= 0, got {value!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ConfigError(f"clip_grad_norm must be > 0 (or None for no clipping), got {clip_grad_norm!r}")
    if fold_bn:
        check_bn_foldable(sim)
    ctx = resolve_context(distributed)
    source: Any
    if isinstance(train_data, StreamSource):
        source = train_data
        source.bind(ctx.rank, ctx.world_size)
        batch_size = source.batch_size
    else:
        data = as_train_data(train_data, labels)
        source = InMemorySource(data, batch_size, epochs, rank=ctx.rank, world_size=ctx.world_size, seed=seed)
    setup = current_setup(sim)
    if mode is not None:
        check_mode(mode)
    if setup is None or (mode is not None and setup.mode != mode):
        setup = prepare_qat(sim, mode or "regular", weight_search=weight_search)
    total_steps = source.total_steps // accumulate_steps
    if total_steps == 0:
        raise ConfigError(
            f"the data gives {source.total_steps} batches, fewer than accumulate_steps={accumulate_steps}"
        )

    model = sim.model
    device = next(iter(model.parameters()), torch.empty(0)).device
    label_kind = source.label_kind()
    teacher = None if label_kind is not None else sim.fp_model.to(device).eval()
    num_classes = 2
    if teacher is not None:
        with torch.no_grad():
            probe = output_tensors(teacher(*(t.to(device) for t in source.probe_inputs())))[0]
        num_classes = int(probe.shape[-1]) if probe.dim() else 1
    loss_name, loss_fn = resolve_loss(
        loss,
        supervised=label_kind is not None,
        labels=None
        if label_kind is None
        else torch.zeros(1, dtype=torch.float32 if label_kind == "float" else torch.int64),
        temperature=temperature,
        num_classes=num_classes,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("sim.model has no trainable parameters (all requires_grad=False)")
    opt = make_optimizer(optimizer, params, lr, weight_decay)
    info: dict[str, Any] = {"mode": setup.mode, "seed": seed, **source.resume_key()}
    # Options that change the trajectory; recorded only when not at their defaults, so checkpoints of
    # plain runs keep resuming as before.
    for key, option, default in (
        ("lr_schedule", lr_schedule, "constant"),
        ("warmup_steps", warmup_steps, 0),
        ("accumulate_steps", accumulate_steps, 1),
        ("freeze_bn", freeze_bn, False),
    ):
        if option != default:
            info[key] = option

    tracker = Tracker(patience=early_stopping_patience)
    start_step, resumed, resumed_loss = 0, None, None
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
            tracker.restore(state.get("tracking"), found[-1])
            resumed_loss = state.get("loss")
    if resumed is None:
        torch.manual_seed(seed)

    if on_start is not None:
        on_start(start_step, total_steps)
    wrapped = wrap_model(model, ctx, device)
    _train_mode(model, freeze_bn)
    # A run resumed from its last checkpoint trains no step: its loss is the checkpoint's.
    last_loss = float(resumed_loss) if isinstance(resumed_loss, int | float) else float("nan")
    result = QatResult(setup.mode, loss_name, total_steps, epochs, last_loss, world_size=ctx.world_size)
    result.resumed_from_step = resumed
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if amp and device.type == "cuda"
        else contextlib.nullcontext()
    )
    started = time.perf_counter()
    epoch_sum, epoch_count, window_sum, window_count = 0.0, 0, 0.0, 0
    batches = source.batches(start_step * accumulate_steps, total_steps * accumulate_steps)
    step = start_step
    try:
        for step in range(start_step, total_steps):
            if cancel is not None and cancel():
                raise CancelledError(f"QAT cancelled before step {step + 1} of {total_steps}")
            rate = lr_at(
                lr_schedule,
                lr,
                step,
                total_steps,
                warmup_steps=warmup_steps,
                step_size=lr_step_size,
                gamma=lr_gamma,
            )
            for group in opt.param_groups:
                group["lr"] = rate
            opt.zero_grad(set_to_none=True)
            loss_value, epoch_ended = 0.0, False
            for micro in range(accumulate_steps):
                inputs, batch_labels = next(batches)
                inputs = tuple(t.to(device, non_blocking=True) for t in inputs)
                if teacher is not None:
                    with torch.no_grad():
                        targets = teacher(*inputs)
                else:
                    targets = None if batch_labels is None else batch_labels.to(device, non_blocking=True)
                # DDP all-reduces on the last micro-batch only.
                sync = micro == accumulate_steps - 1 or not ctx.active
                no_sync: Any = contextlib.nullcontext() if sync else wrapped.no_sync()  # type: ignore[operator]
                with autocast, no_sync:
                    micro_loss = loss_fn(wrapped(*inputs), targets) / accumulate_steps
                micro_loss.backward()
                loss_value += float(micro_loss.detach())
                epoch_ended |= source.is_epoch_end(step * accumulate_steps + micro)
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
            opt.step()  # regular mode: the step post-hook recomputes weight encodings here
            epoch_sum, epoch_count = epoch_sum + loss_value, epoch_count + 1
            window_sum, window_count = window_sum + loss_value, window_count + 1
            result.final_loss = loss_value
            done = step + 1
            if done % log_every == 0 or done == total_steps:
                tracker.record_loss(done, ctx.mean(window_sum / window_count), rate)
                window_sum, window_count = 0.0, 0
            if epoch_ended:
                result.epoch_losses.append(ctx.mean(epoch_sum / epoch_count))
                epoch_sum, epoch_count = 0.0, 0
            metric = None
            due = (done % eval_every == 0) if eval_every else epoch_ended
            if eval_fn is not None and (due or done == total_steps):
                model.eval()
                with torch.no_grad():
                    metric = result.metric = float(eval_fn(sim))
                _train_mode(model, freeze_bn)
                tracker.record_eval(done, metric, model)
            stop = tracker.should_stop
            # The last step always checkpoints: a job killed after training resumes with nothing to train.
            if checkpoint_dir and (done % checkpoint_every == 0 or stop or done == total_steps):
                if ctx.is_main:
                    folder = save_checkpoint(
                        checkpoint_dir, done, model, opt,
                        {**info, "tracking": tracker.state(), "loss": loss_value},
                        extra=tracker.extra_files(),
                    )  # fmt: skip
                    result.checkpoints.append(str(folder))
                ctx.barrier()
            if progress is not None:
                progress(source.epoch_of(step * accumulate_steps)[0], done, loss_value, metric)
            if stop:
                result.stopped_early_at = done
                break
    finally:
        batches.close()  # type: ignore[attr-defined]
    ran = (result.stopped_early_at or total_steps) - start_step
    result.seconds = time.perf_counter() - started
    result.seconds_per_step = result.seconds / ran if ran > 0 else 0.0
    samples = ran * accumulate_steps * batch_size * ctx.world_size
    result.samples_per_second = samples / result.seconds if result.seconds > 0 else 0.0
    result.curves = tracker.curves.to_json()
    result.best_metric, result.best_step = tracker.best_metric, tracker.best_step
    if keep_best and tracker.best_state is not None:
        model.load_state_dict(tracker.best_state)
    model.eval()
    if bn_reestimation_batches > 0:
        result.bn_reestimated = _reestimate_bn(sim, source, bn_reestimation_batches, device)
    if fold_bn:
        from core.ptq.bn_fold import fold_bn_into_quantizer_scale

        result.bn_folded = fold_bn_into_quantizer_scale(sim)
    if finish:
        finish_qat(sim)
    return result


def _train_mode(model: torch.nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def _reestimate_bn(sim: Any, source: Any, num_batches: int, device: torch.device) -> list[str]:
    from core.ptq.bn_reestimation import reestimate_bn_stats

    batches = [tuple(t.to(device) for t in inputs) for inputs in source.bn_batches(num_batches)]
    handle = reestimate_bn_stats(sim.model, batches, num_batches=len(batches), batch_size=len(batches[0][0]))
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
