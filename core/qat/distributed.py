"""Data-parallel QAT with torch.distributed (DDP): gloo on CPU, NCCL on CUDA.

The process group is the caller's (``torchrun`` sets RANK/WORLD_SIZE/MASTER_ADDR; a worker may
call ``init_distributed()``). qat() only wraps ``sim.model`` in DistributedDataParallel when a group
with more than one process is initialized; every rank then runs the same schedule on its slice of
each global batch and DDP averages the gradients, so the weights stay identical on all ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from core.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean(self, value: float) -> float:
        """The mean of a scalar over ranks (loss reporting)."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return float(t.item()) / self.world_size


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def init_distributed(backend: str | None = None) -> DistContext:
    """Join the process group described by the environment (torchrun's variables); return the context."""
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or default_backend())
    return DistContext(dist.get_rank(), dist.get_world_size())


def resolve_context(distributed: bool | None) -> DistContext:
    """None: use the initialized group if any; True: require one; False: single process."""
    initialized = dist.is_available() and dist.is_initialized()
    if distributed is False or (distributed is None and not initialized):
        return DistContext()
    if not initialized:
        raise ConfigError(
            "distributed=True but no torch.distributed process group is initialized; launch with torchrun "
            "or call core.qat.init_distributed() first"
        )
    return DistContext(dist.get_rank(), dist.get_world_size())


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    if not ctx.active:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    # Disabled quantizers and unused branches own no trainable parameters; everything else is used.
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
