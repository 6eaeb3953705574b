"""Range-setter base class and the scheme registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from core.errors import ConfigError
from core.quant.encoding import Encoding, QuantSpec
from core.quant.grouping import as_groups

# Values at least this large in magnitude are masking sentinels, not activations (see _drop_sentinels).
SENTINEL = 1e30
SENTINEL_HEADROOM = 20.0

_SCHEMES: dict[str, type[RangeSetter]] = {}
_ALIASES: dict[str, str] = {}


def register_scheme(name: str, *aliases: str) -> Callable[[type[RangeSetter]], type[RangeSetter]]:
    def deco(cls: type[RangeSetter]) -> type[RangeSetter]:
        _SCHEMES[name] = cls
        cls.scheme = name
        for alias in (name, *aliases):
            _ALIASES[alias.lower()] = name
        return cls

    return deco


def scheme_names() -> list[str]:
    return sorted(_SCHEMES)


def canonical_scheme(name: str) -> str:
    key = name.lower().replace("-", "_") if name else name
    if key in _ALIASES:
        return _ALIASES[key]
    if name.lower() in _ALIASES:
        return _ALIASES[name.lower()]
    raise ConfigError(f"unknown quant scheme {name!r}; choose one of {', '.join(sorted(_ALIASES))}")


def make_range_setter(scheme: str, spec: QuantSpec, **options: Any) -> RangeSetter:
    """A fresh range setter of the named scheme (aliases such as 'tf_enhanced' accepted)."""
    cls = _SCHEMES[canonical_scheme(scheme)]
    try:
        return cls(spec, **options)
    except TypeError as exc:
        raise ConfigError(f"bad options for scheme {scheme!r}: {exc}") from None


class RangeSetter:
    """Observes tensors, then computes an Encoding.

    The base class tracks the running min/max per group. A tensor observed exactly once
    (a weight) is also kept, so schemes can search its range exactly instead of through
    a histogram; a second observation drops it.
    """

    scheme = "base"

    def __init__(self, spec: QuantSpec) -> None:
        self.spec = spec
        self.reset()

    def reset(self) -> None:
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None
        self.static: torch.Tensor | None = None
        self.count = 0
        self.low_sentinels = False
        self.high_sentinels = False

    @property
    def observed(self) -> bool:
        return self.count > 0

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach()
        if not x.is_floating_point():
            return
        x = x.float()
        groups = as_groups(x, self.spec)
        lo, hi = _group_min_max(groups)
        if not (bool((lo > -SENTINEL).all()) and bool((hi < SENTINEL).all())):
            groups = self._drop_sentinels(groups, lo, hi)
            if groups.numel() == 0:
                return
            lo, hi = torch.aminmax(groups, dim=1)
        if self.min is None or self.max is None:
            self.min, self.max = lo, hi
            self.static = groups
        else:
            self.min = torch.minimum(self.min, lo)
            self.max = torch.maximum(self.max, hi)
            self.static = None
        self.count += 1
        self.accumulate(groups, lo, hi)

    def accumulate(self, groups: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Hook for schemes that keep more statistics than min/max (histograms); lo/hi: this batch's."""

    def _drop_sentinels(self, groups: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Masking sentinels (−inf, finfo.min, NaN) carry no range information: keep them out.

        An additive attention mask holds finfo(float32).min; one such value would stretch an 8-bit
        range to 1e38 and zero every real value. On target they saturate to the encoding's end.
        """
        self.low_sentinels |= bool((lo <= -SENTINEL).any())
        self.high_sentinels |= bool((hi >= SENTINEL).any())
        finite = groups.abs() < SENTINEL  # False for NaN too
        if groups.shape[0] == 1:
            return groups[finite].reshape(1, -1)
        # Per-channel: a sentinel counts as zero, which every encoding represents.
        return torch.where(finite, groups, torch.zeros_like(groups))

    def compute(self) -> Encoding:
        if self.spec.dtype == "float":
            return Encoding(self.spec)
        if self.min is None or self.max is None:
            raise ConfigError(
                "no data observed for this quantizer; run calibration data through the model first"
            )
        lo, hi = self.search_range(self.min, self.max)
        if self.low_sentinels and not self.spec.symmetric:
            # Masked positions saturate to the encoding's minimum; keep it far enough below the
            # largest value that a following softmax still gives them ~zero weight (e^-20).
            lo = torch.minimum(lo, hi - SENTINEL_HEADROOM)
        return Encoding.from_min_max(
            lo, hi, bitwidth=self.spec.bitwidth, symmetric=self.spec.symmetric, spec=self.spec
        )

    def search_range(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Choose the encoding range per group; the base class keeps the observed min/max."""
        return lo, hi


def _group_min_max(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group min and max in one vectorised pass (NaN propagates, which _drop_sentinels handles)."""
    if groups.shape[0] == 1:  # per-tensor: a full reduction parallelises better than a dim-1 one
        lo, hi = torch.aminmax(groups)
        return lo.reshape(1), hi.reshape(1)
    return torch.aminmax(groups, dim=1)


def candidate_fractions(n: int, smallest: float = 0.05) -> torch.Tensor:
    """Fractions of the observed range to try when searching for the best clipping."""
    return torch.linspace(smallest, 1.0, n)
