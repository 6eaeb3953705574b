"""The fast inference path is bit-exact with torch's fused fake-quant; the numba histogram equals torch.histc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.quant import kernels
from core.quant.encoding import Encoding
from core.quant.primitives import fake_quantize_inference, fake_quantize_raw
from core.quant.quantizer import Quantizer
from tests.core.quant.encoding_cases import Case, cases

ROOT = Path(__file__).resolve().parents[3]


def _per_tensor_args(enc: Encoding) -> tuple[float, float, float, float]:
    scale = enc.scale.float()
    inv = 1.0 / scale
    zp = enc.zero_point.float()
    return float(scale), float(inv), float(-zp), float(enc.spec.num_steps - zp)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_quantizer_inference_path_equals_fused_kernel(case: Case):
    q = Quantizer(case.spec)
    q.set_encoding(case.encoding)
    with torch.no_grad():
        fast = q(case.x)
    fused = fake_quantize_raw(case.x, q.spec, q.scale, q.zero_point)
    assert torch.equal(fast, fused)


@settings(max_examples=10, deadline=None)
@given(st.integers(2, 16), st.booleans(), st.integers(0, 2**31 - 1), st.sampled_from([1e-3, 1.0, 1e3]))
def test_inference_passes_equal_fused_kernel_on_large_tensors(bitwidth, symmetric, seed, magnitude):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(kernels.MIN_ELEMENTS * 2 + 7, generator=gen) * magnitude
    lo, hi = sorted((float(torch.randn(1, generator=gen)) * magnitude, float(x.std()) * magnitude))
    enc = Encoding.from_min_max(
        torch.tensor([lo]), torch.tensor([hi]), bitwidth=bitwidth, symmetric=symmetric
    )
    fused = fake_quantize_raw(x, enc.spec, enc.scale, enc.zero_point)
    args = _per_tensor_args(enc)
    assert torch.equal(fake_quantize_inference(x, *args), fused)
    assert torch.equal(fake_quantize_inference(x.clone(), *args, inplace=True), fused)


def test_numba_histogram_equals_torch_histc():
    if not kernels.AVAILABLE:
        pytest.skip("numba not installed")
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(kernels.MIN_ELEMENTS * 3, generator=gen) * 2.5
    assert kernels.histogram(x[::2], -3.0, 4.0, 2048) is None  # not contiguous: torch.histc instead
    assert kernels.histogram(x.double(), -3.0, 4.0, 2048) is None
    assert kernels.histogram(x[:100], -3.0, 4.0, 2048) is None  # too small to pay
    counts = kernels.histogram(x, -3.0, 4.0, 2048)
    assert counts is not None
    reference = torch.histc(x, 2048, -3.0, 4.0)
    assert int(counts.sum()) == int(reference.sum()) == int(((x >= -3) & (x <= 4)).sum())
    # Bin edges are computed in float32 in both; allow a value on an edge to land in the neighbour.
    assert int((counts.double() - reference.double()).abs().sum()) <= 8


_SCRIPT = """
import torch
from core.quant import kernels
from core.quant.encoding import Encoding, QuantSpec
from core.quant.primitives import fake_quantize_raw
from core.quant.quantizer import Quantizer
assert kernels.AVAILABLE is False, "LOWBIT_DISABLE_NUMBA was ignored"
gen = torch.Generator().manual_seed(0)
for bw, sym, gran in [(8, False, "per_tensor"), (4, True, "per_tensor"), (8, True, "per_channel")]:
    spec = QuantSpec(bitwidth=bw, symmetric=sym, granularity=gran, axis=0 if gran == "per_channel" else None)
    x = torch.randn(64, 1024, generator=gen) * 3
    q = Quantizer(spec)
    q.compute_encoding_from(x * 0.6)
    with torch.no_grad():
        fast = q(x)
    assert torch.equal(fast, fake_quantize_raw(x, q.spec, q.scale, q.zero_point)), (bw, sym, gran)
print("ok")
"""


def test_inference_path_without_numba_is_bit_exact():
    env = {**os.environ, "LOWBIT_DISABLE_NUMBA": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_kernels_leave_torch_thread_count_alone() -> None:
    """The kernels must not change how many threads torch uses (numba's OpenMP layer would)."""
    from core.quant import kernels

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        x = torch.randn(1 << 17)
        kernels.histogram(x, -3.0, 3.0, 256)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_large_histograms_split_across_threads_give_the_same_counts() -> None:
    if not kernels.AVAILABLE:
        pytest.skip("numba not installed")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        gen = torch.Generator().manual_seed(5)
        x = torch.randn(kernels.SPLIT_ELEMENTS + 12_345, generator=gen) * 3
        assert len(kernels._ranges(x.numel())) == 2  # the split path really runs
        counts = kernels.histogram(x, -3.0, 4.0, 512)
        assert counts is not None
        reference = torch.histc(x, 512, -3.0, 4.0)
        assert int(counts.sum()) == int(((x >= -3) & (x <= 4)).sum())
        assert int((counts.double() - reference.double()).abs().sum()) <= 8
    finally:
        torch.set_num_threads(before)
