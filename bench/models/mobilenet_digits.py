"""A MobileNetV2-style network (inverted residuals, depthwise convs, BN, ReLU6) trained on scikit-learn's
bundled digits, upsampled from 8x8 to 32x32. Shared by the PTQ (issue 4) and QAT (issue 5) benches.

Per-tensor weight quantization of such a network is the classic hard case for PTQ (depthwise channels
with very different ranges after BN folding), which is what CLE and AdaRound are for.

``build_trained_mobilenet_digits(seed)`` trains once (about a minute on 2 CPU threads) and caches the
weights (safetensors) under ``.lowbit/bench-cache/``, keyed by this file's content and the seed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 32
CACHE_DIR = Path(__file__).resolve().parents[2] / ".lowbit" / "bench-cache"
EPOCHS = 20
CALIB_SAMPLES = 512


def _conv_bn(
    cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True
) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6())
    return layers


class InvertedResidual(nn.Module):
    """1x1 expand → 3x3 depthwise → 1x1 project (linear), with a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.block = nn.Sequential(
            *_conv_bn(cin, hidden, 1),
            *_conv_bn(hidden, hidden, 3, stride, groups=hidden),
            *_conv_bn(hidden, cout, 1, act=False),
        )
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_skip else y


class MobileNetDigits(nn.Module):
    """Input ``(N, 1, 32, 32)`` in [0, 1]; output ``(N, 10)`` logits."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(1, 16, 3, 2))
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 1, 3),
            InvertedResidual(16, 24, 2, 4),
            InvertedResidual(24, 24, 1, 4),
            InvertedResidual(24, 32, 2, 4),
            InvertedResidual(32, 32, 1, 4),
        )
        self.head = nn.Sequential(*_conv_bn(32, 96, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(x, 1))


class MobileNetDigitsBundle(NamedTuple):
    """The trained model (eval mode), calibration inputs ``(512, 1, 32, 32)`` from the training split, and
    the held-out evaluation set ``(images, labels)``."""

    model: MobileNetDigits
    calib: torch.Tensor
    eval: tuple[torch.Tensor, torch.Tensor]


def _upsample(images: torch.Tensor) -> torch.Tensor:
    return F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)


def digits_32(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, eval_x, eval_y) of the digits split (examples/digits), images at 32x32."""
    from examples.digits.train import load_split

    split = load_split(seed)
    return (
        _upsample(torch.from_numpy(split.train_x)),
        torch.from_numpy(split.train_y),
        _upsample(torch.from_numpy(split.eval_x)),
        torch.from_numpy(split.eval_y),
    )


def _train(train_x: torch.Tensor, train_y: torch.Tensor, seed: int) -> MobileNetDigits:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MobileNetDigits()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=EPOCHS * -(-len(train_x) // 64))
    for _ in range(EPOCHS):
        model.train()
        order = torch.randperm(len(train_x), generator=gen)
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            # Small random shifts: a little augmentation keeps the net from memorising 1347 images.
            shift = [int(s) for s in torch.randint(-2, 3, (2,), generator=gen)]
            x = torch.roll(train_x[idx], shifts=shift, dims=(2, 3))
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), train_y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def _cache_path(seed: int) -> Path:
    digest = hashlib.sha256(Path(__file__).read_bytes() + f"seed={seed};torch={torch.__version__}".encode())
    return CACHE_DIR / f"mobilenet_digits-{digest.hexdigest()[:16]}.safetensors"


def build_trained_mobilenet_digits(seed: int = 0) -> MobileNetDigitsBundle:
    """The trained MobileNet-style digits model with its calibration and evaluation data (cached on disk)."""
    from safetensors.torch import load_file, save_file

    train_x, train_y, eval_x, eval_y = digits_32(seed)
    path = _cache_path(seed)
    model = MobileNetDigits()
    if path.is_file():
        model.load_state_dict(load_file(str(path)))
        model.eval()
    else:
        model = _train(train_x, train_y, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        tmp.replace(path)
    calib = train_x[
        torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))[:CALIB_SAMPLES]
    ]
    return MobileNetDigitsBundle(model, calib, (eval_x, eval_y))
