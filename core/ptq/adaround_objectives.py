"""Reconstruction objectives for AdaRound: how far a layer with candidate weights Ŵ is from the FP32 layer.

Both measure the same quantity, the mean over output positions of the squared error summed over output
channels, ``E‖Ŵ·x̃ − W·x‖²`` (x̃: the layer's input in the partially quantized model, x: in the FP32
model; biases cancel):

* ``GramObjective`` (Conv1d/2d with zero padding, Linear): the error is quadratic in Ŵ, so it is exact
  over *all* calibration samples from three matrices accumulated once per group —
  ``G̃ = Σ x̃x̃ᵀ``, ``C = Σ x̃xᵀ``, ``G = Σ xxᵀ`` over unfolded patches —
  ``loss = tr(ŴG̃Ŵᵀ) − 2·tr(ŴCWᵀ) + tr(WGWᵀ)``, divided by the number of positions. One iteration costs
  ``C_out·K²`` (K = patch size per group), independent of the data size, and memory is K² per group.
* ``SampledObjective`` (any layer: ConvTranspose, Conv3d, reflect padding, huge K): cached inputs and FP32
  outputs (core/ptq/activation_cache.py), random minibatches, the layer run functionally with Ŵ.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from core.ptq.activation_cache import ActivationCache
from core.ptq.graph_walk import CONV_TRANSPOSE_TYPES


class Objective(Protocol):
    def loss(self, weight: torch.Tensor) -> torch.Tensor: ...


def gram_supported(module: nn.Module) -> bool:
    """Whether GramObjective can express ``module``'s computation as patches × weight."""
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.Conv1d | nn.Conv2d) and not isinstance(module, CONV_TRANSPOSE_TYPES):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    return False


def gram_group_size(module: Any) -> int:
    """K: the number of weights each output channel applies to one patch."""
    weight = module.weight  # type: ignore[union-attr]
    return int(weight[0].numel())


def patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as (groups, K, positions) columns so that output = W_g · columns_g.

    Built from a strided view (``Tensor.unfold``) and one copy: about 5× faster than ``F.unfold``
    followed by a permute, measured on a depthwise layer."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1]).t().unsqueeze(0)
    conv: Any = module
    if isinstance(conv, nn.Conv1d):
        x = x.unsqueeze(2)
        kernel, dilation, padding, stride = (
            (1, *conv.kernel_size),
            (1, *conv.dilation),
            (0, *conv.padding),
            (1, *conv.stride),
        )
    else:
        kernel, dilation, padding, stride = conv.kernel_size, conv.dilation, conv.padding, conv.stride
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel, dilation, padding, stride
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    view = x.unfold(2, (kh - 1) * dh + 1, sh).unfold(
        3, (kw - 1) * dw + 1, sw
    )  # (N, C, H', W', span_h, span_w)
    if dh > 1 or dw > 1:
        view = view[..., ::dh, ::dw]
    n, c, h, w = view.shape[:4]
    groups = int(conv.groups)
    view = view.reshape(n, groups, c // groups, h, w, kh, kw).permute(1, 2, 5, 6, 0, 3, 4)
    return view.reshape(groups, (c // groups) * kh * kw, n * h * w)


class GramAccumulator:
    """Accumulates G̃, C and G for one layer over calibration batches (float64 sums)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.gq: torch.Tensor | None = None
        self.cross: torch.Tensor | None = None
        self.gfp: torch.Tensor | None = None
        self.positions = 0

    def add(self, x_quant: torch.Tensor, x_fp: torch.Tensor) -> None:
        a_q = patches(self.module, x_quant.detach().float())
        a_fp = patches(self.module, x_fp.detach().float())
        # float32 products per batch, float64 sums across batches.
        gq = torch.bmm(a_q, a_q.transpose(1, 2)).double()
        cross = torch.bmm(a_q, a_fp.transpose(1, 2)).double()
        gfp = torch.bmm(a_fp, a_fp.transpose(1, 2)).double()
        if self.gq is None:
            self.gq, self.cross, self.gfp = gq, cross, gfp
        else:
            self.gq += gq
            self.cross += cross  # type: ignore[operator]
            self.gfp += gfp  # type: ignore[operator]
        self.positions += a_q.shape[2]

    def objective(self, fp_weight: torch.Tensor, device: torch.device) -> GramObjective:
        assert self.gq is not None and self.cross is not None and self.gfp is not None
        return GramObjective(fp_weight, self.gq, self.cross, self.gfp, self.positions, device)


class GramObjective:
    """Exact full-data reconstruction error from accumulated Gram matrices (see module docstring)."""

    def __init__(
        self,
        fp_weight: torch.Tensor,
        gq: torch.Tensor,
        cross: torch.Tensor,
        gfp: torch.Tensor,
        positions: int,
        device: torch.device,
    ) -> None:
        groups = gq.shape[0]
        self.shape = fp_weight.shape
        w = fp_weight.detach().double().reshape(groups, -1, gq.shape[1]).to(device)
        inv = 1.0 / max(positions, 1)
        self.gq = (gq.to(device) * inv).float()
        # tr(Ŵ C Wᵀ) = Σ Ŵ ⊙ (W Cᵀ)
        self.m = ((w @ cross.to(device).transpose(1, 2)) * inv).float()
        self.const = float((w * (w @ gfp.to(device))).sum() * inv)
        self.groups = groups

    def loss(self, weight: torch.Tensor) -> torch.Tensor:
        w = weight.reshape(self.groups, -1, self.gq.shape[1])
        return (w * (torch.bmm(w, self.gq) - 2.0 * self.m)).sum() + self.const

    def row_errors(self, weights: torch.Tensor) -> torch.Tensor:
        """Per candidate and output channel, the loss of ``weights`` (candidates stacked on dim 0) less
        the constant; all candidates in one batched product."""
        n = weights.shape[0]
        k = self.gq.shape[1]
        # (candidates, C_out, ...) → (groups, candidates·rows, K): a group's rows of every candidate.
        w = weights.reshape(n, self.groups, -1, k).transpose(0, 1).reshape(self.groups, -1, k)
        m = self.m.repeat(1, n, 1)
        rows = (w * (torch.bmm(w, self.gq) - 2.0 * m)).sum(-1)  # (groups, candidates·rows)
        return rows.reshape(self.groups, n, -1).transpose(0, 1).reshape(n, -1)

    def gradient(self, weight: torch.Tensor) -> torch.Tensor:
        """d loss / d Ŵ = 2(ŴG̃ − M), in Ŵ's own shape (G̃ is symmetric)."""
        w = weight.reshape(self.groups, -1, self.gq.shape[1])
        return (2.0 * (torch.bmm(w, self.gq) - self.m)).reshape(self.shape)


class SampledObjective:
    """Minibatch reconstruction error on cached (input, FP32 output) pairs; any layer type."""

    def __init__(
        self,
        module: nn.Module,
        inputs: ActivationCache,
        targets: ActivationCache,
        batch_size: int,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        self.module = module
        self.inputs, self.targets = inputs, targets
        self.batch_size = min(batch_size, len(inputs))
        self.device = device
        self.generator = generator
        bias = getattr(module, "bias", None)
        self.bias = bias.detach().to(device) if bias is not None else None

    def _draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(len(self.inputs), generator=self.generator)[: self.batch_size]
        return self.inputs.sample(idx).to(self.device), self.targets.sample(idx).to(self.device)

    def _error(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        params = {"weight": weight}
        if self.bias is not None:
            params["bias"] = self.bias
        out = functional_call(self.module, params, (x,))
        diff = (out - y).pow(2)
        # Sum over channels (dim 1, or the last dim for Linear), mean over samples and positions.
        channel_dim = diff.dim() - 1 if isinstance(self.module, nn.Linear) else 1
        return diff.sum(channel_dim).mean()

    def loss(self, weight: torch.Tensor) -> torch.Tensor:
        x, y = self._draw()
        return self._error(x, y, weight)

    def full_error(self, weight: torch.Tensor, chunk: int = 256) -> float:
        """The error over all cached samples (for reporting)."""
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(self.inputs), chunk):
                idx = torch.arange(start, min(start + chunk, len(self.inputs)))
                x, y = self.inputs.sample(idx).to(self.device), self.targets.sample(idx).to(self.device)
                total += float(self._error(x, y, weight)) * len(idx)
                count += len(idx)
        return total / max(count, 1)
