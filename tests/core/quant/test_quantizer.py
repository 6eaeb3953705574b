"""Quantizer module: observing, errors, freezing, state-dict round trips, disabling, cache freshness."""

from __future__ import annotations

import io
import random

import pytest
import torch

from core.errors import LowbitError
from core.quant import Encoding, Quantizer, QuantSpec
from core.quant.primitives import fake_quantize


def test_observing_calibrates_to_what_it_saw(device):
    q = Quantizer(QuantSpec(bitwidth=8), scheme="min_max").to(device)
    x = torch.linspace(-1.0, 3.0, 1001, device=device)
    with q.observing():
        assert torch.equal(q(x), x)  # pass-through while observing
    enc = q.encoding
    assert enc is not None and q.is_calibrated
    assert float(enc.min[0]) == pytest.approx(-1.0, abs=float(enc.scale[0]))
    assert float(enc.max[0]) == pytest.approx(3.0, abs=float(enc.scale[0]))
    y = q(x)
    assert y.device == x.device
    assert float((y - x).abs().max()) <= float(enc.scale[0]) / 2 * (1 + 1e-5)


def test_uncalibrated_forward_says_what_to_do():
    q = Quantizer(QuantSpec(bitwidth=8))
    with pytest.raises(LowbitError, match="compute_encodings"):
        q(torch.randn(4))


def test_frozen_quantizer_keeps_its_encoding():
    q = Quantizer(QuantSpec(bitwidth=8))
    q.compute_encoding_from(torch.tensor([-1.0, 1.0]))
    before = q.encoding
    q.freeze()
    with q.observing():
        q(torch.tensor([-100.0, 100.0]))
    q.compute_encoding_from(torch.tensor([-50.0, 50.0]))
    q.set_encoding(
        Encoding.from_min_max(torch.tensor([-9.0]), torch.tensor([9.0]), bitwidth=8, symmetric=False)
    )
    q.clear_encoding()
    assert before is not None and q.encoding is not None and q.encoding.equals(before)


@pytest.mark.parametrize(
    "spec",
    [
        QuantSpec(bitwidth=8),
        QuantSpec(bitwidth=4, symmetric=True, granularity="per_channel", axis=0),
        QuantSpec(bitwidth=4, symmetric=True, granularity="per_block", axis=0, block_size=4),
    ],
)
def test_state_dict_round_trip_gives_identical_outputs(spec):
    w = torch.randn(6, 8, 3)
    q = Quantizer(spec, scheme="sqnr")
    q.compute_encoding_from(w)
    buffer = io.BytesIO()
    torch.save(q.state_dict(), buffer)
    buffer.seek(0)
    fresh = Quantizer(spec, scheme="sqnr")
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.encoding is not None and q.encoding is not None
    assert fresh.encoding.equals(q.encoding)
    assert torch.equal(fresh(w), q(w))
    with torch.no_grad():
        assert torch.equal(fresh(w), q(w))


def test_disabled_quantizer_is_identity():
    q = Quantizer(QuantSpec(bitwidth=2))
    q.compute_encoding_from(torch.randn(100))
    q.enabled = False
    x = torch.randn(100, requires_grad=True)
    assert q(x) is x
    ints = torch.arange(5)
    q.enabled = True
    assert q(ints) is ints  # integer tensors (indices) pass through


def test_set_spec_drops_the_encoding():
    q = Quantizer(QuantSpec(bitwidth=8))
    q.compute_encoding_from(torch.randn(10))
    q.set_spec(bitwidth=4)
    assert q.encoding is None and q.spec.bitwidth == 4


def test_new_encodings_are_never_served_from_a_stale_cache():
    # The inference path caches (scale, 1/scale, lo, hi). A new encoding's tensor can land at the freed
    # address of an old one; the cache must still notice the change. Random set/clear/forward sequences
    # make that reuse happen (a few times per thousand steps with glibc's allocator).
    rng = random.Random(0)
    q = Quantizer(QuantSpec(bitwidth=8))
    x = torch.randn(100)
    for _ in range(3000):
        if rng.random() < 0.3:
            q.clear_encoding()
        if rng.random() < 0.2:
            q.set_spec(bitwidth=rng.choice([4, 8]))
        half = rng.uniform(0.1, 5.0)
        spec = q.spec
        q.set_encoding(
            Encoding.from_min_max(
                torch.tensor([-half]),
                torch.tensor([half]),
                bitwidth=spec.bitwidth,
                symmetric=False,
                spec=spec,
            )
        )
        if rng.random() < 0.5:
            with torch.no_grad():
                y = q(x)
            enc = q.encoding
            assert enc is not None
            assert torch.equal(y, fake_quantize(x, enc))
