"""Child-process scenarios for tests/core/test_qat.py: a run that SIGKILLs itself mid-training, its
resumption, and DDP ranks. Run as ``python -m tests.core.qat_scenarios ARGS`` from the repo root."""

from __future__ import annotations

import argparse
import os
import signal

import torch
import torch.distributed as dist
import torch.fx
from safetensors.torch import save_file
from torch import nn

from core.qat import qat
from core.quantsim import QuantSim

SAMPLES = 96


def build_sim(seed: int = 0, bn: bool = True) -> tuple[QuantSim, torch.Tensor, torch.Tensor]:
    """A small conv net at W4A8 calibrated on seeded data, plus training inputs and labels."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(1, 8, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 3 * 3, 4)]
    model = nn.Sequential(*layers).eval()
    x = torch.randn(SAMPLES, 1, 8, 8)
    labels = (x.mean(dim=(1, 2, 3)) * 4).round().clamp(-2, 1).long() + 2
    sim = QuantSim(torch.fx.symbolic_trace(model), (x[:2],), prepared=True, param_bw=4, output_bw=8)
    sim.compute_encodings([x[:32]])
    return sim, x, labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--mode", default="regular")
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--no-bn", action="store_true")
    parser.add_argument("--rank", type=int, default=-1)
    parser.add_argument("--world-size", type=int, default=1)
    parser.add_argument("--init-file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.rank >= 0:
        dist.init_process_group(
            "gloo", init_method=f"file://{args.init_file}", rank=args.rank, world_size=args.world_size
        )
    sim, x, labels = build_sim(bn=not args.no_bn)

    def progress(epoch: int, step: int, loss: float, metric: float | None) -> None:
        if step == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # dies like a worker whose node went away

    qat(
        sim,
        x,
        epochs=args.epochs,
        lr=1e-2,
        labels=labels,
        batch_size=args.batch_size,
        mode=args.mode,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=2,
        progress=progress,
    )
    if args.rank <= 0:
        save_file({k: v.contiguous() for k, v in sim.model.state_dict().items()}, args.out)
    if args.rank >= 0:
        # Both ranks done (rank 0 has saved) before the group goes: a rank tearing gloo's pairs down while
        # its peer still used them aborted the peer ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
