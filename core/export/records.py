"""Format-neutral encoding records: what one entry of an encodings file says about one tensor.

Every file version (0.6.1, 1.0.0, 2.0.0) is read into and written from these records, so the
formats differ only in their JSON layout. The numbers follow AIMET's file convention (see
core/quant/encoding.py): unsigned grid ``q ∈ [0, 2^b − 1]``, ``x̂ = (q + offset)·scale``,
``offset ≤ 0`` (−2^(b−1) for signed symmetric).

A record does not know the channel axis when its file does not say it (0.6.1 and 1.0.0 never
do): :meth:`EncodingRecord.to_encoding` takes the axis from the quantizer it is loaded into.

>>> enc = Encoding.from_min_max(torch.tensor([-1.0]), torch.tensor([3.0]), bitwidth=8, symmetric=False)
>>> EncodingRecord.from_encoding("x", enc).to_encoding(enc.spec).equals(enc)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from core.errors import ConfigError
from core.quant.encoding import Encoding, QuantSpec

Granularity = Literal["per_tensor", "per_channel", "per_block"]


@dataclass(frozen=True)
class EncodingRecord:
    """One tensor's encoding as stored in a file.

    ``scale``/``offset`` are float32/float64 arrays: shape (1,) per-tensor, (C,) per-channel,
    (C, blocks) per-block (2.0.0 nests them that way; 1.0.0 flattens them channel-major).
    Float (float16) records carry empty arrays. ``axis`` is the channel axis when the file
    states it (2.0.0 per-channel), ``None`` otherwise.
    """

    name: str
    dtype: Literal["int", "float"]
    bitwidth: int
    symmetric: bool = False
    granularity: Granularity = "per_tensor"
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    axis: int | None = None
    block_size: int | None = None
    block_axis: int | None = None

    @property
    def num_groups(self) -> int:
        return int(self.scale.size)

    @classmethod
    def from_encoding(
        cls, name: str, encoding: Encoding, shape: tuple[int, ...] | None = None
    ) -> EncodingRecord:
        """Record for ``encoding`` on tensor ``name``; ``shape`` (the tensor's) lets per-block scales nest."""
        spec = encoding.spec
        if spec.dtype == "float":
            return cls(name=name, dtype="float", bitwidth=spec.bitwidth)
        scale = encoding.scale.detach().cpu().to(torch.float32).reshape(-1).numpy()
        offset = encoding.offset.detach().cpu().to(torch.float64).reshape(-1).numpy()
        if spec.granularity == "per_block" and shape is not None and spec.axis is not None:
            channels = shape[spec.axis % len(shape)]
            scale, offset = scale.reshape(channels, -1), offset.reshape(channels, -1)
        return cls(
            name=name,
            dtype="int",
            bitwidth=spec.bitwidth,
            symmetric=spec.symmetric,
            granularity=spec.granularity,
            scale=scale,
            offset=offset,
            axis=spec.axis,
            block_size=spec.block_size,
            block_axis=_block_axis(spec) if spec.granularity == "per_block" else None,
        )

    def to_encoding(self, hint: QuantSpec | None = None) -> Encoding:
        """The engine Encoding; axes (and block axis) not stored in the file come from ``hint``."""
        if self.dtype == "float":
            return Encoding.float16()
        axis, block_axis = self.axis, self.block_axis
        if hint is not None and hint.granularity == self.granularity:
            # The quantizer's own spec decides the axes (its None block axis means "the default").
            axis = hint.axis if hint.axis is not None else axis
            block_axis = hint.block_axis
        if self.granularity != "per_tensor" and axis is None:
            axis = 0
        spec = QuantSpec(
            bitwidth=self.bitwidth,
            symmetric=self.symmetric,
            dtype="int",
            granularity=self.granularity,
            axis=axis if self.granularity != "per_tensor" else None,
            block_size=self.block_size if self.granularity == "per_block" else None,
            block_axis=block_axis if self.granularity == "per_block" else None,
        )
        scale = torch.from_numpy(np.asarray(self.scale, dtype=np.float32).reshape(-1).copy())
        offset = torch.from_numpy(np.asarray(self.offset, dtype=np.float32).reshape(-1).copy())
        return Encoding(spec=spec, scale=scale, offset=offset)

    def renamed(self, name: str) -> EncodingRecord:
        return replace(self, name=name)


@dataclass(frozen=True)
class EncodingsDoc:
    """A parsed encodings file: activation and parameter records keyed by tensor name."""

    version: str
    activations: dict[str, EncodingRecord]
    params: dict[str, EncodingRecord]
    quantizer_args: dict[str, Any] = field(default_factory=dict)
    excluded_layers: list[str] = field(default_factory=list)
    producer: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def get(self, name: str) -> EncodingRecord | None:
        return self.params.get(name) or self.activations.get(name)

    def names(self) -> set[str]:
        return set(self.activations) | set(self.params)


def _block_axis(spec: QuantSpec) -> int:
    # Same default as core.quant.grouping: blocks run along the input channels.
    if spec.block_axis is not None:
        return spec.block_axis
    return 1 if spec.axis == 0 else 0


def check_offsets(record: EncodingRecord, where: str) -> None:
    """Reject offsets that are not integers on the unsigned grid, naming the tensor and file."""
    if record.dtype == "float":
        return
    off = np.asarray(record.offset, dtype=np.float64)
    steps = 2**record.bitwidth - 1
    if (
        not np.all(np.isfinite(off))
        or np.any(off != np.round(off))
        or np.any(off > 0)
        or np.any(off < -steps)
    ):
        raise ConfigError(
            f"{where}: encoding {record.name!r} has offsets outside the integer range [-{steps}, 0] "
            f"(AIMET convention x = (q + offset) * scale, offset <= 0)"
        )
    sc = np.asarray(record.scale, dtype=np.float64)
    if sc.size == 0 or not np.all(np.isfinite(sc)) or np.any(sc <= 0):
        raise ConfigError(
            f"{where}: encoding {record.name!r} needs positive finite scales, got {sc.tolist()[:4]}"
        )
    if sc.shape != off.shape:
        raise ConfigError(
            f"{where}: encoding {record.name!r} has {sc.size} scales but {off.size} offsets; they must match"
        )
