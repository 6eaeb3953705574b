"""Quantization-aware training: regular (fixed activation grids, weight grids follow the weights)
or range learning (LSQ-trained scales and offsets), in the user's loop or the built-in one.

>>> from core.qat import prepare_qat, qat, finish_qat
"""

from core.qat.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from core.qat.distributed import DistContext, init_distributed
from core.qat.loop import QatResult, qat
from core.qat.prepare import MODES, QatSetup, finish_qat, prepare_qat
from core.qat.schedule import LR_SCHEDULES, OPTIMIZERS, lr_at
from core.qat.shards import Shard, ShardManifest, ShardPlan
from core.qat.stream import StreamSource

__all__ = [
    "LR_SCHEDULES",
    "MODES",
    "OPTIMIZERS",
    "DistContext",
    "QatResult",
    "QatSetup",
    "Shard",
    "ShardManifest",
    "ShardPlan",
    "StreamSource",
    "finish_qat",
    "init_distributed",
    "list_checkpoints",
    "load_checkpoint",
    "lr_at",
    "prepare_qat",
    "qat",
    "save_checkpoint",
]
