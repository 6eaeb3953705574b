"""Multi-process QAT on one node: the worker writes a run bundle and starts torch's elastic launcher,
``python -m torch.distributed.run --standalone --nproc-per-node N --max-restarts R -m
worker.training.entry BUNDLE`` (N gloo processes on a CPU worker, one NCCL process per GPU on a GPU
worker), then relays while it runs:

* rank 0's progress → the job's progress;
* new checkpoints → object storage (``jobs/<id>/state/qat/``), so a worker that dies hands the job to
  another worker that resumes from there (it pulls them into the bundle before launching);
* a cancel request → the bundle's cancel file (the ranks stop together at the next step).

A rank that dies makes the launcher's agent stop the group; the worker then starts the group again
(up to ``max_restarts`` times), and the new ranks resume from the newest checkpoint. When the group is done the worker rebuilds the sim,
loads rank 0's trained weights and bakes the encodings for export.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.errors import CancelledError, ConfigError, LowbitError
from worker.pipeline.context import JobContext, TechniqueResult
from worker.pipeline.resume import StateSync
from worker.techniques.quantsim import build_sim, calibrate
from worker.training.bundle import CANCEL, CHECKPOINTS, FINAL, PROGRESS, RESULT, Bundle, die_with_parent

POLL_S = 0.2


class TrainingFailedError(LowbitError):
    """The training processes failed in a way a retry would repeat (their error is in the message)."""


def launcher_command(bundle: Path, nproc: int) -> list[str]:
    """The torch.distributed.run command line of a one-node run. The group is restarted by the worker
    (a fresh launcher and rendezvous per start), not by the agent's own ``--max-restarts``: after a
    SIGKILLed rank, restarts inside one agent hung in rendezvous on our 2-core CI hosts."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
        f"--nproc-per-node={nproc}", "--max-restarts=0", "--monitor-interval=0.5",
        "-m", "worker.training.entry", str(bundle),
    ]  # fmt: skip


def write_bundle(ctx: JobContext, root: Path) -> Bundle:
    bundle = Bundle(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in (PROGRESS, RESULT, FINAL, CANCEL):
        bundle.path(stale).unlink(missing_ok=True)
    bundle.write_json(
        "bundle.json",
        {
            "job_id": ctx.job_id,
            "spec": ctx.spec,
            "device": ctx.device,
            **{
                role: str(getattr(ctx, f"{role}_path"))
                for role in ("model", "calib", "eval", "train")
                if getattr(ctx, f"{role}_path")
            },
            "train_manifest": ctx.train_manifest,
        },
    )
    return bundle


def _nproc(ctx: JobContext, world_size: int) -> int:
    if ctx.device.startswith("cuda"):
        import torch

        if world_size > torch.cuda.device_count():
            raise ConfigError(
                f"world_size {world_size} needs {world_size} GPUs; this worker has {torch.cuda.device_count()}"
            )
    return world_size


def run_distributed(ctx: JobContext) -> TechniqueResult:
    """Train with ``params.world_size`` processes under torch's elastic launcher (see module docstring)."""
    from safetensors.torch import load_file

    from core.qat import finish_qat, list_checkpoints, prepare_qat

    params = ctx.params
    if int(params.get("nodes") or 1) > 1:
        from worker.training.kubeflow import run_on_kubeflow

        return run_on_kubeflow(ctx)
    world_size = int(params.get("world_size") or 1)
    nproc = _nproc(ctx, world_size)
    root = ctx.workdir / "dist"
    bundle = write_bundle(ctx, root)
    checkpoints = root / CHECKPOINTS
    checkpoints.mkdir(exist_ok=True)
    sync = StateSync(ctx.store, ctx.wsettings, ctx.job_id, "qat", checkpoints, owner=ctx.monitor)
    resumed = sync.pull()
    if resumed:
        ctx.monitor.log(f"resuming QAT from stored checkpoint {resumed}")
    max_restarts = int(params.get("max_restarts", 2))
    log_path = root / "launcher.log"
    restarts = 0
    while True:
        ctx.monitor.log(f"starting {nproc} training processes (torch.distributed.run), start {restarts + 1}")
        returncode = _launch(ctx, bundle, sync, log_path, nproc, list_checkpoints)
        outcome = bundle.read_json(RESULT) or {}
        if returncode == 0 or outcome or restarts >= max_restarts:
            break
        # A rank died: torch's agent stopped the group. Start it again; it resumes from the newest checkpoint.
        restarts += 1
        ctx.monitor.log(
            f"a training process failed (exit {returncode}); restarting the group from its last checkpoint"
        )
    if "cancelled" in outcome:
        raise CancelledError(str(outcome["cancelled"]))
    if "error" in outcome:
        raise TrainingFailedError(f"QAT failed in the training processes: {outcome['error']}")
    if returncode != 0 or "metrics" not in outcome:
        tail = log_path.read_text(errors="replace")[-1500:]
        raise RuntimeError(
            f"the QAT process group failed {restarts + 1} times (exit code {returncode}): …{tail}"
        )
    sim: Any = build_sim(ctx)
    calibrate(ctx, sim)
    prepare_qat(sim, "range_learning" if params.get("range_learning") else "regular")
    sim.model.load_state_dict(load_file(bundle.path(FINAL), device=str(ctx.device)))
    finish_qat(sim)
    return TechniqueResult(sim=sim, metrics={"qat": {**outcome["metrics"], "restarts": restarts}})


def _launch(
    ctx: JobContext, bundle: Bundle, sync: StateSync, log_path: Path, nproc: int, listing: Any
) -> int:
    """One run of the launcher; returns its exit code (the process is gone when this returns)."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            launcher_command(bundle.root, nproc),
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            _relay(ctx, bundle, sync, proc, listing)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return int(proc.returncode)


def _relay(
    ctx: JobContext, bundle: Bundle, sync: StateSync, proc: subprocess.Popen[bytes], listing: Any
) -> None:
    cancel_sent = 0.0
    while True:
        running = proc.poll() is None
        state = bundle.read_json(PROGRESS)
        if state and state.get("total"):
            ctx.monitor.progress(min(1.0, int(state["step"]) / int(state["total"])))
        done = listing(bundle.path(CHECKPOINTS))
        if done:
            sync.push(done[-1])
        if not running:
            return
        if not cancel_sent and ctx.cancel_check():
            bundle.path(CANCEL).touch()
            cancel_sent = time.monotonic()
        if cancel_sent and time.monotonic() - cancel_sent > ctx.wsettings.cancel_grace_s + 30:
            raise CancelledError("the training processes did not stop after the cancel request")
        time.sleep(POLL_S)
