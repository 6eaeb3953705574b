"""The entry point of every QAT training process: ``python -m worker.training.entry BUNDLE_DIR``
(one node: worker/training/launch.py) or ``... --from-store jobs/<id>/dist`` (every pod of a
Kubeflow TrainJob: worker/training/kubeflow.py), started by torch's elastic launcher
(``torch.distributed.run``) with RANK/WORLD_SIZE/MASTER_ADDR set.

From the store, each process downloads the bundle into a temporary folder and pulls the newest
stored checkpoint; rank 0 mirrors new checkpoints, its progress, the trained weights and the result
back under the prefix (there is no worker beside it to relay them).

Each rank loads the model and data named by the bundle, calibrates (identically on every rank),
and trains its share; DDP keeps the weights equal. Rank 0 writes progress, checkpoints, the trained
weights and the result. Cancellation is a file the worker creates; the ranks agree on it with an
all-reduce before every step, so they all stop at the same step. A restarted group (after a rank
died) resumes from the newest checkpoint like a resumed job.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, cast

from worker.training.bundle import CANCEL, CHECKPOINTS, FINAL, PROGRESS, RESULT, Bundle, die_with_parent


class RankMonitor:
    """What the pipeline's stages report, printed to the launcher's log (ranks have no database)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def progress(self, stage_fraction: float) -> None:
        pass

    def enter(self, stage: str) -> None:
        pass

    def log(self, message: str, level: str = "info") -> None:
        print(f"[rank {self.rank}] {level}: {message}", flush=True)

    def cancelled(self) -> bool:
        return False  # calibration runs alike on every rank; the training loop checks collectively


def _device(bundle: dict[str, Any], local_rank: int) -> str:
    import torch

    if str(bundle["device"]).startswith("cuda"):
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    return "cpu"


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    import torch
    import torch.distributed as dist

    from core.errors import CancelledError, LowbitError
    from core.qat import init_distributed
    from service.settings import Settings
    from service.storage import make_store
    from service.uploads.budgets import UploadBudgets
    from worker.monitor import JobMonitor
    from worker.pipeline.context import JobContext
    from worker.pipeline.prepare import prepare_inputs
    from worker.settings import WorkerSettings
    from worker.training.run import result_metrics, train

    args = list(argv if argv is not None else sys.argv[1:])
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    settings, wsettings = Settings(), WorkerSettings()
    store = make_store(settings)
    mirror = None
    if args[0] == "--from-store":
        from worker.training.store_bundle import StoreMirror

        mirror = StoreMirror(store, wsettings, args[1], rank)
        root = mirror.fetch()
    else:
        root = Path(args[0])
    bundle = Bundle(root)
    spec = bundle.read_json("bundle.json")
    assert spec is not None, f"no bundle.json in {root}"
    device = _device(spec, int(os.environ.get("LOCAL_RANK", 0)))
    init_distributed("nccl" if device.startswith("cuda") else "gloo")
    job = JobContext(
        spec["job_id"], spec["spec"], root / f"rank-{rank}", store,
        cast(JobMonitor, RankMonitor(rank)), wsettings, device=device,
        budgets=UploadBudgets.from_settings(settings),
    )  # fmt: skip
    job.workdir.mkdir(parents=True, exist_ok=True)
    for role in ("model", "calib", "eval", "train"):
        if spec.get(role):
            setattr(job, f"{role}_path", Path(spec[role]))
    job.train_manifest = spec.get("train_manifest")
    cancel_file, last_write = bundle.path(CANCEL), [0.0]

    def cancel() -> bool:
        flag = torch.tensor([1.0 if cancel_file.exists() else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def progress(step: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if rank == 0 and (now - last_write[0] > 0.2 or step == total):
            bundle.write_json(PROGRESS, {"step": step, "total": total, "loss": loss})
            last_write[0] = now
            if mirror is not None:
                mirror.push(root / CHECKPOINTS, bundle.path(PROGRESS))

    try:
        prepare_inputs(job)
        sim, result = train(
            job, root / CHECKPOINTS, progress=progress, cancel=cancel, rank=rank, world_size=world_size
        )
    except CancelledError as exc:
        if rank == 0:
            bundle.write_json(RESULT, {"cancelled": str(exc)})
            if mirror is not None:
                mirror.finish(bundle.path(RESULT), None)
        return 0
    except LowbitError as exc:  # the same input fails the same way after a restart: report, end cleanly
        if rank == 0:
            bundle.write_json(RESULT, {"error": str(exc), "type": type(exc).__name__})
            if mirror is not None:
                mirror.finish(bundle.path(RESULT), None)
        traceback.print_exc()
        return 0
    if rank == 0:
        from safetensors.torch import save_file

        tmp = bundle.path(f".{FINAL}")
        save_file({k: v.detach().cpu().contiguous() for k, v in sim.model.state_dict().items()}, tmp)
        os.replace(tmp, bundle.path(FINAL))
        bundle.write_json(RESULT, {"metrics": result_metrics(result)})
        if mirror is not None:
            mirror.finish(bundle.path(RESULT), bundle.path(FINAL))
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
