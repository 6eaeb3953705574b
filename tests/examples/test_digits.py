"""The digits example: accurate, complete artifacts, and the pt2/ONNX files compute the trained network."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from examples.digits.build import CALIB_SAMPLES, build
from examples.digits.model import INPUT_NAME


def test_fp32_accuracy_reaches_target(digits_artifacts):
    assert digits_artifacts.fp32_accuracy >= 0.95


def test_data_files_hold_the_model_input_key(digits_artifacts):
    with np.load(digits_artifacts.calib_data) as calib:
        assert list(calib.keys()) == [INPUT_NAME]
        assert calib[INPUT_NAME].shape == (CALIB_SAMPLES, 1, 8, 8)
    with np.load(digits_artifacts.eval_data) as evaluation:
        assert set(evaluation.keys()) == {INPUT_NAME, "labels"}
        assert len(evaluation[INPUT_NAME]) == len(evaluation["labels"])


def test_pt2_and_onnx_agree_and_reach_the_recorded_accuracy(digits_artifacts):
    with np.load(digits_artifacts.eval_data) as evaluation:
        images, labels = evaluation[INPUT_NAME], evaluation["labels"]
    program = torch.export.load(digits_artifacts.model_pt2)
    with torch.no_grad():
        torch_logits = program.module()(torch.from_numpy(images)).numpy()
    session = ort.InferenceSession(str(digits_artifacts.model_onnx), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {INPUT_NAME: images})
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)
    assert float((torch_logits.argmax(1) == labels).mean()) == digits_artifacts.fp32_accuracy


def test_build_is_cached_by_content_hash(digits_artifacts):
    before = digits_artifacts.model_pt2.stat().st_mtime_ns
    again = build(digits_artifacts.out_dir)
    assert again == digits_artifacts
    assert again.model_pt2.stat().st_mtime_ns == before
