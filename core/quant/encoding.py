"""The encoding value object: how a tensor is mapped onto an integer (or float16) grid.

Convention (AIMET's file convention, kept internally so export is a plain copy):
an integer encoding uses the unsigned grid ``q ∈ [0, 2^b − 1]`` and

    x̂ = (q + offset) · scale,        offset ≤ 0,

so symmetric signed 8-bit weights have ``offset = −128`` (grid −128·s … 127·s) and an
asymmetric activation with range [min, max] has ``offset = round(min / scale)``. ONNX
QuantizeLinear's zero point is ``−offset`` (uint) or 0 for signed symmetric.

Granularity: per-tensor (one scale), per-channel (one per slice along ``axis``), or
per-block (``block_size`` consecutive input channels of each output channel share a scale;
the scale tensor then has shape (channels, blocks)).

>>> enc = Encoding.from_min_max(torch.tensor([-1.0]), torch.tensor([3.0]), bitwidth=8, symmetric=False)
>>> round(float(enc.min[0]), 2), int(enc.offset[0])
(-1.0, -64)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from core.errors import ConfigError

Granularity = Literal["per_tensor", "per_channel", "per_block"]
DType = Literal["int", "float"]

INT_BITWIDTHS = range(2, 17)
FLOAT_BITWIDTHS = (16,)
# A channel whose values are all zero still needs a usable scale: AIMET writes the float32
# epsilon there and QNN then overflows int32 biases (qualcomm/aimet#4054). Any scale represents
# zero exactly, so a neutral one is used instead.
_DEAD_RANGE_ABSMAX = 1.0
_MIN_SCALE = 1e-10


@dataclass(frozen=True)
class QuantSpec:
    """What a quantizer should do, before calibration: bitwidth, symmetry, dtype and granularity.

    ``axis`` is the channel axis for per-channel/per-block (0 for Conv/Linear weights, 1 for
    ConvTranspose); ``block_axis`` is the input-channel axis that blocks run along.
    """

    bitwidth: int = 8
    symmetric: bool = False
    dtype: DType = "int"
    granularity: Granularity = "per_tensor"
    axis: int | None = None
    block_size: int | None = None
    block_axis: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("int", "float"):
            raise ConfigError(f"unknown quantizer dtype {self.dtype!r}; choose 'int' or 'float'")
        if self.dtype == "int" and self.bitwidth not in INT_BITWIDTHS:
            raise ConfigError(f"integer bitwidth {self.bitwidth} not supported; choose 2..16")
        if self.dtype == "float" and self.bitwidth not in FLOAT_BITWIDTHS:
            raise ConfigError(f"float bitwidth {self.bitwidth} not supported; choose 16 (float16)")
        if self.granularity not in ("per_tensor", "per_channel", "per_block"):
            raise ConfigError(
                f"unknown granularity {self.granularity!r}; choose per_tensor, per_channel or per_block"
            )
        if self.granularity != "per_tensor" and self.axis is None:
            raise ConfigError(f"{self.granularity} quantization needs a channel axis")
        if self.granularity == "per_block" and (not self.block_size or self.block_size < 1):
            raise ConfigError("per_block quantization needs block_size >= 1")

    @property
    def num_steps(self) -> int:
        return 2**self.bitwidth - 1


@dataclass(frozen=True)
class Encoding:
    """A calibrated encoding: ``scale`` and ``offset`` tensors plus the spec that produced them.

    ``scale`` has one element per group (1 for per-tensor, C for per-channel, C×blocks
    flattened for per-block); ``offset`` has the same shape and holds integers ≤ 0.
    Float encodings (float16) carry no scale/offset.
    """

    spec: QuantSpec
    scale: torch.Tensor = field(default_factory=lambda: torch.ones(1))
    offset: torch.Tensor = field(default_factory=lambda: torch.zeros(1))

    @property
    def bitwidth(self) -> int:
        return self.spec.bitwidth

    @property
    def symmetric(self) -> bool:
        return self.spec.symmetric

    @property
    def min(self) -> torch.Tensor:
        return self.offset * self.scale

    @property
    def max(self) -> torch.Tensor:
        return (self.spec.num_steps + self.offset) * self.scale

    @property
    def zero_point(self) -> torch.Tensor:
        """Zero point on the unsigned grid (ONNX uint zero point)."""
        return (-self.offset).round().to(torch.int32)

    @classmethod
    def from_min_max(
        cls,
        min_: torch.Tensor,
        max_: torch.Tensor,
        *,
        bitwidth: int,
        symmetric: bool,
        spec: QuantSpec | None = None,
    ) -> Encoding:
        """Encoding covering [min, max] per group; zero is always exactly representable."""
        spec = spec or QuantSpec(bitwidth=bitwidth, symmetric=symmetric)
        min_ = torch.as_tensor(min_, dtype=torch.float32).reshape(-1)
        max_ = torch.as_tensor(max_, dtype=torch.float32).reshape(-1)
        steps = spec.num_steps
        if spec.symmetric:
            absmax = torch.maximum(min_.abs(), max_.abs())
            absmax = torch.where(absmax > 0, absmax, torch.full_like(absmax, _DEAD_RANGE_ABSMAX))
            half = 2 ** (spec.bitwidth - 1)
            scale = (absmax / (half - 1)).clamp_min(_MIN_SCALE)
            offset = torch.full_like(scale, -float(half))
        else:
            lo = torch.minimum(min_, torch.zeros_like(min_))
            hi = torch.maximum(max_, torch.zeros_like(max_))
            dead = (hi - lo) <= 0
            hi = torch.where(dead, torch.full_like(hi, _DEAD_RANGE_ABSMAX), hi)
            scale = ((hi - lo) / steps).clamp_min(_MIN_SCALE)
            offset = torch.round(lo / scale).clamp(-steps, 0)
        return cls(spec=spec, scale=scale.contiguous(), offset=offset.contiguous())

    @classmethod
    def float16(cls) -> Encoding:
        return cls(spec=QuantSpec(bitwidth=16, dtype="float"))

    def to(self, device: torch.device | str) -> Encoding:
        return Encoding(self.spec, self.scale.to(device), self.offset.to(device))

    def equals(self, other: Encoding) -> bool:
        """Bit-exact equality of spec, scales and offsets."""
        return (
            self.spec == other.spec
            and torch.equal(self.scale.cpu().float(), other.scale.cpu().float())
            and torch.equal(self.offset.cpu().float(), other.offset.cpu().float())
        )
