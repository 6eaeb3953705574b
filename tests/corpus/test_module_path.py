"""Every corpus architecture as a Python module through the Python API (`QuantSim(module, example)`), the
path a notebook user takes: ALBERT's shared layers and GPT-2's tied ``lm_head`` included. W8A8 min-max
QuantSim, calibrated on the example batch, exported, and the QDQ model run in ONNX Runtime against the FP32
module. MiniLM's module path is tests/core/test_minilm_pipeline.py.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tests.corpus.build import CorpusEntry, corpus_entries
from tests.corpus.pipeline import _cosine, reference_module, sample_inputs
from tests.corpus.test_pipeline import _FLOOR, _MODULE_ONLY, _QDQ_FLOOR

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "entry", [e for e in corpus_entries() if e.name not in _MODULE_ONLY], ids=lambda e: e.name
)
def test_module_quantizes_exports_and_runs_in_ort(entry: CorpusEntry, tmp_path: Path) -> None:
    from core.export import OnnxRunner, export_sim
    from core.quantsim import QuantSim

    samples = sample_inputs(entry.spec, 4, seed=5)
    example = tuple(samples[name] for name in entry.input_names)
    # A copy: the reference module is shared by the other corpus tests in this process.
    sim = QuantSim(copy.deepcopy(reference_module(entry)), example, param_bw=8, output_bw=8)
    sim.compute_encodings([example])
    assert sum(q.enabled for q in sim.quantizers().values()) > 0
    with torch.no_grad():
        reference = reference_module(entry)(*example)
        sim_cosine = _cosine(reference, sim.model(*example))
    exported = export_sim(sim, tmp_path)
    assert exported.qdq_onnx is not None
    qdq = OnnxRunner(exported.qdq_onnx).run([x.numpy() for x in example])[0]
    qdq_cosine = _cosine(reference, qdq)
    floor = _FLOOR.get(entry.name, 0.95)
    assert sim_cosine >= floor, (entry.name, sim_cosine)
    assert qdq_cosine >= _QDQ_FLOOR.get(entry.name, floor), (entry.name, qdq_cosine)
