"""The weight grid AdaRound rounds on, chosen by the layer's own reconstruction error.

AdaRound only chooses, per weight, the grid point below or above; which grid it gets decides how good
the result can be. A range setter that sees only the weight (min-max, or SQNR's weight-noise trade-off)
cannot tell that a per-tensor 4-bit grid which zeroes the small output channels of a layer with channel
ranges spread 10–30× wrecks the layer's output. So before rounding, each candidate range
``k/n · [min, max]`` (k = 1..n, as SeqMSE) and the range the sim already has are scored by the exact
full-data reconstruction error of nearest rounding, from the Gram statistics the AdaRound objective has
already accumulated (core/ptq/adaround_objectives.py): every candidate costs one ``C_out·K²`` product,
all of them batched in one call. Per tensor the total decides; per channel, each output channel picks
its own. The sim's own range is a candidate, so the chosen grid is never worse on the calibration data.
"""

from __future__ import annotations

import torch

from core.ptq.adaround_objectives import GramObjective
from core.ptq.seq_mse import candidate_encodings
from core.quant.encoding import Encoding
from core.quant.primitives import fake_quantize


def range_candidates(encoding: Encoding, weight: torch.Tensor, n: int) -> list[Encoding]:
    """``encoding`` itself, then SeqMSE's candidates: the weight's min-max range scaled by k/n, k = 1..n."""
    return [encoding, *candidate_encodings(encoding, weight, n)]


def search_grid(objective: GramObjective, weight: torch.Tensor, encoding: Encoding, n: int) -> Encoding:
    """The candidate encoding (see the module docstring) whose nearest rounding of ``weight`` has the
    lowest reconstruction error under ``objective``; ``encoding`` itself when none is lower."""
    spec = encoding.spec
    if n < 1 or spec.dtype != "int" or spec.granularity not in ("per_tensor", "per_channel"):
        return encoding
    if spec.granularity == "per_channel" and (spec.axis or 0) != 0:
        return encoding  # the Gram rows are output channels (axis 0)
    candidates = range_candidates(encoding, weight, n)
    device = weight.device
    rounded = torch.stack([fake_quantize(weight, c.to(device)) for c in candidates])
    errors = objective.row_errors(rounded)  # (candidates, output channels), without the constant
    if spec.granularity == "per_tensor":
        best = errors.sum(1).argmin().reshape(1)
    else:
        best = errors.argmin(0)
    index = best.reshape(1, -1).cpu()
    scales = torch.stack([c.scale.reshape(-1).cpu() for c in candidates])
    offsets = torch.stack([c.offset.reshape(-1).cpu() for c in candidates])
    return Encoding(
        spec,
        torch.gather(scales, 0, index).reshape(encoding.scale.shape).to(encoding.scale.device).contiguous(),
        torch.gather(offsets, 0, index)
        .reshape(encoding.offset.shape)
        .to(encoding.offset.device)
        .contiguous(),
    )
