"""Fixtures for the export tests: the trained digits CNN (from the example's cached artifacts)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from examples.digits.model import DigitsCNN


@dataclass(frozen=True)
class TrainedDigits:
    model: DigitsCNN
    calib: torch.Tensor
    eval_x: torch.Tensor
    eval_y: np.ndarray


@pytest.fixture(scope="session")
def trained_digits(digits_artifacts) -> TrainedDigits:
    """The example's trained DigitsCNN (weights from model.pt2) with its calibration and eval data."""
    from core.io.models import load_exported_program

    program = load_exported_program(digits_artifacts.model_pt2)
    model = DigitsCNN()
    model.load_state_dict({k: v for k, v in program.state_dict.items()}, strict=False)
    model.eval()
    calib = torch.from_numpy(np.load(digits_artifacts.calib_data)["input"])
    data = np.load(digits_artifacts.eval_data)
    eval_x = torch.from_numpy(data["input"])
    with torch.no_grad():
        accuracy = float((model(eval_x).argmax(1).numpy() == data["labels"]).mean())
    # The weights really are the trained ones (strict=False above must not hide missing keys).
    assert accuracy == pytest.approx(digits_artifacts.fp32_accuracy, abs=1e-6)
    return TrainedDigits(model, calib, eval_x, data["labels"])
