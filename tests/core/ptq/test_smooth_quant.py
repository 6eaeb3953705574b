"""SmoothQuant migration: float outputs unchanged, activation outlier channels shrunk into the weights."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from core.errors import ConfigError
from core.ptq.smooth_quant import SmoothQuantConfig, apply_smooth_quant
from tests.core.ptq.tiny_models import relative_error


class _Block(nn.Module):
    """Pre-norm attention-like block: LN → q/k/v Linears, residual, LN → MLP (Linear, GELU, Linear)."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.up, self.act, self.down = nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        attn = torch.softmax(self.q(h) @ self.k(h).transpose(-1, -2), dim=-1) @ self.v(h)
        x = x + attn
        return x + self.down(self.act(self.up(self.ln2(x))))


def test_migration_leaves_float_outputs_unchanged_and_flattens_activation_outliers():
    """Given LayerNorms with two outlier channels (γ 40×), When migrating with α = 0.5, Then both
    LayerNorm → Linear groups are migrated, the output is unchanged (relative error ≤ 1e-5) and the
    LayerNorm outputs' per-channel range spread shrinks."""
    torch.manual_seed(0)
    model = _Block().eval()
    with torch.no_grad():
        for ln in (model.ln1, model.ln2):
            ln.weight.copy_(1 + 0.1 * torch.randn(16))
            ln.weight[[3, 11]] *= 40.0
    x = torch.randn(8, 6, 16)
    reference = model(x)
    gm = fx.symbolic_trace(model)

    def spread(m: nn.Module) -> float:
        r = m.ln1(x).detach().abs().reshape(-1, 16).amax(0)
        return float(r.max() / r.min())

    before = spread(gm)
    result = apply_smooth_quant(gm, x, SmoothQuantConfig(alpha=0.5, batch_size=4))
    assert result.migrated == [("ln1", ("q", "k", "v")), ("ln2", ("up",))]
    assert relative_error(gm(x), reference) <= 1e-5
    assert spread(gm) < before / 4


def test_alpha_outside_zero_one_is_refused():
    with pytest.raises(ConfigError, match="alpha"):
        SmoothQuantConfig(alpha=1.5)
