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
