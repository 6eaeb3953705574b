"""Range setters: coverage, error reduction on heavy tails, percentile clipping, histograms, scheme names."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError
from core.quant import make_range_setter, scheme_names
from core.quant.encoding import QuantSpec
from core.quant.primitives import fake_quantize
from core.quant.range_setters.histogram import RunningHistogram


def _mse(x: torch.Tensor, scheme: str, spec: QuantSpec, batches: int = 1) -> float:
    rs = make_range_setter(scheme, spec)
    for chunk in x.chunk(batches):
        rs.observe(chunk)
    return float((fake_quantize(x, rs.compute()) - x).pow(2).mean())


def _heavy_tailed(kind: str, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "laplace":
        u = torch.rand(n, generator=gen) - 0.5
        return -torch.sign(u) * torch.log1p(-2 * u.abs())
    if kind == "student_t4":  # normal / sqrt(chi²(4) / 4)
        chi2 = torch.randn(4, n, generator=gen).pow(2).sum(0)
        return torch.randn(n, generator=gen) / torch.sqrt(chi2 / 4)
    x = torch.randn(n, generator=gen)  # "outliers": 0.1% of the values 25x larger
    x[torch.randperm(n, generator=gen)[: n // 1000]] *= 25
    return x


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 16),
    st.booleans(),
    st.sampled_from(["per_tensor", "per_channel"]),
    st.integers(1, 4),
    st.integers(0, 2**31 - 1),
)
def test_min_max_covers_everything_observed(bitwidth, symmetric, granularity, batches, seed):
    spec = QuantSpec(
        bitwidth=bitwidth,
        symmetric=symmetric,
        granularity=granularity,
        axis=1 if granularity == "per_channel" else None,
    )
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(8 * batches, 5, 3, generator=gen) * torch.rand(1, 5, 1, generator=gen) * 10
    rs = make_range_setter("min_max", spec)
    for chunk in x.chunk(batches):
        rs.observe(chunk)
    enc = rs.compute()
    groups = x.movedim(1, 0).reshape(5, -1) if granularity == "per_channel" else x.reshape(1, -1)
    lo, hi = groups.min(1).values, groups.max(1).values
    half_step = enc.scale / 2 * (1 + 1e-5)
    # Asymmetric offsets are rounded onto the grid, which can move each end by at most half a step.
    assert torch.all(enc.min <= torch.minimum(lo, torch.zeros_like(lo)) + half_step)
    assert torch.all(enc.max >= torch.maximum(hi, torch.zeros_like(hi)) - half_step)
    diff = (fake_quantize(x, enc) - x).abs()
    # Same element order as `groups`, so each error is compared with its own value's float32 slack.
    err = diff.movedim(1, 0).reshape(5, -1) if granularity == "per_channel" else diff.reshape(1, -1)
    assert torch.all(err <= half_step.unsqueeze(1) + 1e-6 * groups.abs())


@pytest.mark.parametrize("kind", ["laplace", "student_t4", "outliers"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("scheme", ["sqnr", "mse"])
@pytest.mark.parametrize("batches", [1, 4])
def test_sqnr_and_mse_reduce_error_on_heavy_tails(scheme, symmetric, batches, kind):
    # One batch and four must both work: a tensor seen once is searched too, not only running histograms.
    x = _heavy_tailed(kind, 40_000, 7)
    spec = QuantSpec(bitwidth=4, symmetric=symmetric)
    baseline = _mse(x, "min_max", spec, batches)
    assert _mse(x, scheme, spec, batches) < 0.7 * baseline


def test_search_schemes_improve_per_channel_weights():
    w = torch.stack([_heavy_tailed("student_t4", 512, c) * (c + 1) for c in range(8)])
    spec = QuantSpec(bitwidth=4, symmetric=True, granularity="per_channel", axis=0)
    baseline = _mse(w, "min_max", spec)
    for scheme in ("sqnr", "mse"):
        assert _mse(w, scheme, spec) < 0.7 * baseline


def test_search_schemes_leave_uniform_data_nearly_unclipped():
    x = torch.linspace(-1, 1, 10_001)
    spec = QuantSpec(bitwidth=8)
    for batches in (1, 3):
        rs = make_range_setter("sqnr", spec)
        for chunk in x.chunk(batches):
            rs.observe(chunk)
        enc = rs.compute()
        assert float(enc.min[0]) <= -0.9 and float(enc.max[0]) >= 0.9


@pytest.mark.parametrize("batches", [1, 5])
@pytest.mark.parametrize("percentile", [99.0, 99.9])
def test_percentile_clips_the_expected_fraction(percentile, batches):
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(5))
    rs = make_range_setter("percentile", QuantSpec(bitwidth=8), percentile=percentile)
    for chunk in x.chunk(batches):
        rs.observe(chunk)
    enc = rs.compute()
    clipped = float(((x < enc.min[0]) | (x > enc.max[0])).float().mean())
    expected = 2 * (1 - percentile / 100)
    assert expected * 0.7 <= clipped <= expected * 1.3


def test_percentile_100_is_min_max_and_bad_values_are_refused():
    x = torch.randn(1000)
    spec = QuantSpec(bitwidth=8)
    a, b = make_range_setter("percentile", spec, percentile=100), make_range_setter("min_max", spec)
    a.observe(x)
    b.observe(x)
    assert a.compute().equals(b.compute())
    for bad in (49.0, 100.5):
        with pytest.raises(ConfigError, match=r"\[50, 100\]"):
            make_range_setter("percentile", spec, percentile=bad)
    with pytest.raises(ConfigError, match="bad options for scheme 'min_max'"):
        make_range_setter("min_max", spec, percentile=99)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-50, 50), st.floats(0.01, 30), st.integers(1, 3000)), min_size=1, max_size=6)
)
def test_histogram_widening_keeps_total_counts(batches):
    hist = RunningHistogram(bins=256)
    total = 0
    gen = torch.Generator().manual_seed(0)
    for centre, spread, n in batches:
        flat = centre + spread * torch.randn(n, generator=gen)
        hist.add(flat, float(flat.min()), float(flat.max()))
        total += n
        assert hist.counts is not None
        assert float(hist.counts.sum()) == total
        # Every value so far lies inside the histogram's range.
        assert hist.lo <= float(flat.min()) and hist.hi >= float(flat.max())


def test_histogram_rebinning_keeps_mass_where_it_was():
    hist = RunningHistogram(bins=100)
    hist.add(torch.full((1000,), 0.25), 0.0, 1.0)
    hist.add(torch.tensor([-3.0, 3.0]), -3.0, 3.0)
    assert hist.counts is not None
    centers = hist.centers()
    width = (hist.hi - hist.lo) / hist.bins
    heavy = int(torch.argmax(hist.counts))
    assert abs(float(centers[heavy]) - 0.25) <= 2 * width
    assert float(hist.counts.sum()) == 1002


def test_unknown_scheme_names_the_choices():
    with pytest.raises(ConfigError) as info:
        make_range_setter("entropy", QuantSpec())
    message = str(info.value)
    assert "'entropy'" in message
    for name in ("min_max", "sqnr", "mse", "percentile", "tf_enhanced"):
        assert name in message


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("tf", "min_max"),
        ("post_training_tf", "min_max"),
        ("tf_enhanced", "sqnr"),
        ("tf-enhanced", "sqnr"),
        ("TF_ENHANCED", "sqnr"),
        ("post_training_tf_enhanced", "sqnr"),
        ("post_training_percentile", "percentile"),
    ],
)
def test_aliases(alias, canonical):
    assert make_range_setter(alias, QuantSpec()).scheme == canonical
    assert set(scheme_names()) == {"min_max", "mse", "percentile", "sqnr"}


def test_compute_before_observing_and_float16():
    with pytest.raises(ConfigError, match="no data observed"):
        make_range_setter("min_max", QuantSpec()).compute()
    enc = make_range_setter("sqnr", QuantSpec(bitwidth=16, dtype="float")).compute()
    assert enc.spec.dtype == "float"


def test_sqnr_per_tensor_weight_range_balances_noise_across_spread_output_channels():
    """Given a conv weight whose output channels' ranges are spread ~30× (as after BN folding), When its
    per-tensor 4-bit SQNR range is searched with its channel axis, Then the mean per-channel
    noise-to-signal ratio — what the next layers see, each channel relative to its own scale — is lower
    than with the tensor-wide search, and no channel is rounded away entirely."""
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3) * torch.logspace(-0.75, 0.75, 16).reshape(-1, 1, 1, 1)
    spec = QuantSpec(bitwidth=4, symmetric=True)

    def encoding(**options: int) -> object:
        rs = make_range_setter("sqnr", spec, **options)
        rs.observe(w)
        return rs.compute()

    def nsr(enc: object) -> torch.Tensor:
        return (fake_quantize(w, enc) - w).pow(2).sum((1, 2, 3)) / w.pow(2).sum((1, 2, 3))

    balanced, tensor_wide = nsr(encoding(channel_axis=0)), nsr(encoding())
    assert float(balanced.mean()) < float(tensor_wide.mean())
    assert float(tensor_wide.max()) == pytest.approx(1.0)  # the tensor-wide range zeroes a channel
    assert float(balanced.max()) < 1.0


def test_quantsim_gives_sqnr_and_mse_weight_range_setters_their_output_channel_axis():
    from torch import nn

    from core.quantsim import QuantSim

    model = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.ConvTranspose2d(4, 3, 2), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)
    )
    x = torch.randn(1, 2, 5, 5)
    for scheme, axes in (("sqnr", [0, 1, 0]), ("mse", [0, 1, 0]), ("min_max", [None, None, None])):
        sim = QuantSim(model, (x,), param_bw=4, per_channel=False, param_scheme=scheme)
        weights = [q for k, q in sim.param_quantizers().items() if k.endswith(".weight")]
        assert [getattr(q.range_setter, "channel_axis", None) for q in weights] == axes, scheme
