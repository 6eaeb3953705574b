"""One QAT training run of a job: build and calibrate the sim, pick the training data (a streamed
sharded dataset, a training file, or the calibration data), train with the job's options.

The same function runs in the worker's process (world_size 1) and in every rank of a launched
process group; only rank 0's checkpoints and results are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.pipeline.context import JobContext
from worker.techniques.quantsim import build_sim, calibrate
from worker.training.evaluation import make_eval_fn
from worker.training.shard_reader import ShardOpener

# Job params passed to core.qat.qat under the same name.
_SAME_NAME = (
    "batch_size", "accumulate_steps", "optimizer", "weight_decay", "lr_schedule", "warmup_steps",
    "lr_step_size", "lr_gamma", "clip_grad_norm", "loss", "eval_every", "keep_best",
    "early_stopping_patience", "bn_reestimation_batches", "freeze_bn", "amp", "seed",
    "checkpoint_every", "log_every",
)  # fmt: skip
_DEFAULTS: dict[str, Any] = {"epochs": 1, "learning_rate": 1e-5, "batch_size": 32, "checkpoint_every": 50,
                             "shuffle_buffer": 4096, "prefetch_shards": 2, "seed": 0, "keep_best": True}  # fmt: skip


def param(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    return _DEFAULTS.get(name) if value is None else value


def qat_options(params: dict[str, Any]) -> dict[str, Any]:
    """core.qat.qat keyword arguments from a job's (validated) ``params``."""
    options = {name: params[name] for name in _SAME_NAME if params.get(name) is not None}
    options.update(
        epochs=int(param(params, "epochs")),
        lr=float(param(params, "learning_rate")),
        mode="range_learning" if params.get("range_learning") else "regular",
        batch_size=int(param(params, "batch_size")),
        checkpoint_every=int(param(params, "checkpoint_every")),
        keep_best=bool(param(params, "keep_best")),
    )
    return options


def training_source(job: JobContext, rank: int, world_size: int) -> Any:
    """What core.qat.qat trains on: a StreamSource over a sharded dataset, else the training file's
    data, else the calibration data."""
    if job.train_manifest is None:
        return job.train if job.train is not None else job.calib
    from core.qat import ShardManifest, ShardPlan, StreamSource
    from core.qat.shards import lane_batch

    params = job.params
    lanes = int(params.get("data_lanes") or world_size)
    batch = int(param(params, "batch_size"))
    plan = ShardPlan(
        ShardManifest.from_json(job.train_manifest),
        lanes=lanes,
        lane_batch=lane_batch(batch, lanes, world_size),
        buffer=int(param(params, "shuffle_buffer")),
        seed=int(param(params, "seed")),
    )
    opener = ShardOpener(job.store, job.wsettings, job.workdir / f"shards-{rank}", job.loaded, job.budgets)
    return StreamSource(
        plan,
        opener,
        int(param(params, "epochs")),
        rank=rank,
        world_size=world_size,
        prefetch=int(param(params, "prefetch_shards")),
        pin_memory=job.device.startswith("cuda"),
    )


def train(
    job: JobContext,
    checkpoint_dir: Path,
    *,
    progress: Callable[[int, int, float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[Any, Any]:
    """Calibrate and train the job's sim (not finished: the caller bakes encodings); returns
    (sim, core.qat.QatResult). Resumes from the newest checkpoint in ``checkpoint_dir``;
    ``progress(step, total_steps, loss)`` after each step."""
    from core.qat import qat

    sim: Any = build_sim(job)
    calibrate(job, sim)
    eval_fn = None
    if job.evaluation is not None:
        eval_fn = make_eval_fn(job.evaluation, job.loaded.module, job.device)
    total = [0]

    def on_step(epoch: int, step: int, loss: float, metric: float | None) -> None:
        if progress is not None:
            progress(step, total[0], loss)

    result = qat(
        sim,
        training_source(job, rank, world_size),
        **qat_options(job.params),
        checkpoint_dir=str(checkpoint_dir),
        resume=True,
        progress=on_step,
        on_start=lambda first, steps: total.__setitem__(0, steps),
        cancel=cancel,
        distributed=world_size > 1,
        eval_fn=eval_fn,
        finish=False,
    )
    return sim, result


def result_metrics(result: Any, **extra: Any) -> dict[str, Any]:
    """The ``qat`` entry of a job's metrics.json (curves included: the dashboard plots them)."""
    return {
        "steps": result.steps,
        "final_loss": result.final_loss,
        "loss": result.loss_name,
        "resumed_from_step": result.resumed_from_step,
        "seconds": round(result.seconds, 2),
        "samples_per_second": round(result.samples_per_second, 1),
        "world_size": result.world_size,
        "best_metric": result.best_metric,
        "best_step": result.best_step,
        "stopped_early_at": result.stopped_early_at,
        "bn_reestimated": result.bn_reestimated,
        "curves": result.curves,
        **extra,
    }
