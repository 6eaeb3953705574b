"""Quantized-input calibration: re-observe activation ranges with the upstream quantizers active.

``compute_encodings`` observes every activation quantizer with float activations upstream (AIMET's
semantics). On target, though, each tensor is computed from *quantized* inputs: its distribution
is the float one plus the noise (and clipping) of everything upstream. ``refine_encodings`` runs
the calibration data again with every quantizer quantizing with its current encoding while each
activation quantizer records what it receives, then sets the new encodings together (a Jacobi
step towards the ranges a layer-by-layer sequential calibration would give). Two passes get most
of the way on MiniLM-L6 (bench/minilm.py); each pass costs one calibration.

>>> import torch
>>> from torch import nn
>>> from core.quantsim import QuantSim
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
>>> x = torch.randn(32, 4)
>>> sim = QuantSim(model, (x[:1],), scheme="percentile")
>>> sim.compute_encodings([x[:16], x[16:]])
>>> refine_encodings(sim, [x[:16], x[16:]], passes=2)
2
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from core.errors import ConfigError
from core.quant.quantizer import Quantizer
from core.quantsim.sim import _device_of, _to


class _ObservingQuantizer(nn.Module):
    """Stands in for a quantizer in its module's ModuleList during a refinement pass.

    Records what reaches the quantizer (in the wrapped quantizer's range setter), then quantizes it
    with the current encoding, so everything downstream sees on-target values.
    """

    def __init__(self, inner: Quantizer) -> None:
        super().__init__()
        self.inner = inner

    @property
    def enabled(self) -> bool:
        return self.inner.enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            self.inner.range_setter.observe(x)
        return self.inner(x)

    def quantize_fresh_output(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def quantize_relu_input(self, x: torch.Tensor) -> None:
        return None  # the fused ReLU path would record the ReLU's input instead of its output


def refine_encodings(
    sim: Any,
    data: Iterable[Any] | Any,
    passes: int = 1,
    num_batches: int | None = None,
    batch_size: int = 32,
) -> int:
    """Re-calibrate activation encodings ``passes`` times with upstream quantization active.

    Needs encodings on every enabled activation quantizer (run ``sim.compute_encodings`` first).
    Frozen and disabled quantizers keep their encodings; weights are not touched. Each quantizer
    keeps its own scheme (min-max, percentile, SQNR, ...). Returns the number of passes run.
    ``data`` may be any re-iterable of batches (a list, a DataLoader) or an object with
    ``.batches(batch_size)``.
    """
    if passes < 0:
        raise ConfigError(f"refinement passes must be ≥ 0, got {passes}")
    targets = _targets(sim)
    missing = [key for key, (q, _, _) in targets.items() if not q.is_calibrated]
    if missing:
        raise ConfigError(
            f"refine_encodings needs calibrated activation quantizers; {missing[0]} has no encoding "
            "(run sim.compute_encodings(data) first)"
        )
    for _ in range(passes):
        _one_pass(sim, data, targets, num_batches, batch_size)
    return passes


def _targets(sim: Any) -> dict[str, tuple[Quantizer, nn.ModuleList, int]]:
    """Enabled, unfrozen activation quantizers with the ModuleList slot each one sits in."""
    found: dict[str, tuple[Quantizer, nn.ModuleList, int]] = {}
    for name, module in sim.quantized_modules().items():
        for role, slots in (("input", module.input_quantizers), ("output", module.output_quantizers)):
            for i, q in enumerate(slots):
                if isinstance(q, Quantizer) and q.enabled and not q.frozen and q.spec.dtype == "int":
                    found[f"{name}.{role}.{i}"] = (q, slots, i)
    return found


def _one_pass(
    sim: Any,
    data: Any,
    targets: dict[str, tuple[Quantizer, nn.ModuleList, int]],
    num_batches: int | None,
    batch_size: int,
) -> None:
    for q, slots, i in targets.values():
        q.range_setter.reset()
        slots[i] = _ObservingQuantizer(q)
    was_training = sim.model.training
    sim.model.eval()
    seen = 0
    try:
        batches = data.batches(batch_size) if hasattr(data, "batches") else data
        device = _device_of(sim.model)
        with torch.no_grad():
            for batch in batches:
                inputs = batch if isinstance(batch, tuple | list) else (batch,)
                sim.model(*(_to(t, device) for t in inputs))
                seen += 1
                if num_batches is not None and seen >= num_batches:
                    break
    finally:
        for q, slots, i in targets.values():
            slots[i] = q
        sim.model.train(was_training)
    if seen == 0:
        raise ConfigError(
            "refine_encodings got no calibration batches; pass data that can be iterated again "
            "(a list or a DataLoader, not a generator that compute_encodings used up)"
        )
    # All encodings change together, after the pass: every quantizer saw the same upstream encodings.
    for q, _, _ in targets.values():
        if q.range_setter.observed:
            q.set_encoding(q.range_setter.compute())
