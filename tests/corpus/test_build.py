"""The corpus builder: files are what the exporters wrote for the module, cached, and dynamic in batch."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.corpus.build import FORMATS, CorpusBuildError, cache_key, corpus_entries


def test_cache_key_is_stable_and_names_every_model():
    assert cache_key() == cache_key() and len(cache_key()) == 16
    names = [entry.name for entry in corpus_entries()]
    assert len(names) == len(set(names)) >= 15
    with pytest.raises(KeyError, match="choose from"):
        corpus_entries(["no_such_model"])


def test_files_compute_what_the_module_computes_at_another_batch_size():
    """Given the own MobileNetV2-style model, when its three files are built (or read from the cache),
    then each computes the module's output at batch 3 (exported at batch 2), and a second request is a
    cache hit that returns the same file."""
    (entry,) = corpus_entries(["mobilenet_style"])
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = entry.module()(x).numpy()
    assert set(entry.formats) == set(FORMATS)
    program = torch.export.load(entry.path("pt2"))  # written by this test suite: trusted
    np.testing.assert_allclose(program.module()(x).detach().numpy(), expected, rtol=1e-4, atol=1e-5)
    for fmt in ("onnx", "onnx-legacy"):
        session = ort.InferenceSession(str(entry.path(fmt)), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == entry.input_names
        (got,) = session.run(None, {"x": x.numpy()})
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert entry.path("pt2") == entry.path("pt2")
    calib = np.load(entry.calibration())
    assert list(calib) == entry.input_names and calib["x"].shape[0] >= 8


def test_exporter_gaps_are_reported_not_built():
    (entry,) = corpus_entries(["gpt2"])
    assert "onnx-legacy" not in entry.formats
    with pytest.raises(CorpusBuildError, match="aten::diff"):
        entry.path("onnx-legacy")
