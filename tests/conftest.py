"""Project-wide pytest fixtures. Append new fixtures; do not rewrite others'."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def digits_artifacts():
    """The digits example's artifacts (examples.digits.Paths): model.pt2, model.onnx, calib.npz, eval.npz.

    Built once into examples/digits/artifacts/ (cached across sessions by a content hash).
    """
    from examples.digits import build

    return build()


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request: pytest.FixtureRequest):
    """torch.device to run a test on: CPU always, CUDA as well when a GPU is present (else skipped)."""
    import torch

    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA not available on this machine")
    return torch.device(request.param)
