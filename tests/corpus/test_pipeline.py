"""The corpus through lowbit as a user runs it: load the file → validate → QuantSim W8A8 → export → QDQ in ORT.

Given a model written by a library nobody here wrote (transformers, random-init small configs) and exported
by torch 2.13, when its file goes through the pipeline, then it validates with no blocking issue (ops left in
float are named), quantizes, exports, and both exported files (model.onnx, model_qdq.onnx) run in ONNX
Runtime at two batch sizes and, where the file's sequence is dynamic, two lengths other than the export's
(tests.corpus.pipeline.EVAL_SIZES), with outputs close to the FP32 module's.

CI time: the full matrix (every model × .pt2, ONNX dynamo, ONNX legacy) takes several minutes on CI's
2 cores, so CI runs the ``.pt2`` case of every architecture except three heavy ones covered elsewhere
(MiniLM: tests/core/test_minilm_pipeline.py as a module; transformers' MobileNetV2 and MobileViT: the own
MobileNetV2-style model and the ONNX cases). ``LOWBIT_CORPUS=full`` runs the full matrix.
"""

from __future__ import annotations

import os

import pytest

from tests.corpus.build import FORMATS, corpus_entries
from tests.corpus.pipeline import run_case

pytestmark = pytest.mark.slow

_HEAVY = {"minilm", "mobilenet_v2", "mobilevit"}
# W8A8 per-tensor min-max on random-init nets: the floors are the measured figures less a margin.
_FLOOR = {"minilm": 0.7}
_FULL = os.environ.get("LOWBIT_CORPUS") == "full"


def _cases() -> list[object]:
    cases = []
    for entry in corpus_entries():
        for fmt in entry.formats:
            if _FULL or (fmt == "pt2" and entry.name not in _HEAVY):
                cases.append(pytest.param(entry, fmt, id=f"{entry.name}-{fmt}"))
    return cases


@pytest.mark.parametrize(("entry", "fmt"), _cases())
def test_corpus_case_validates_quantizes_exports_and_runs_in_ort(entry, fmt):
    result = run_case(entry, fmt)
    print(result.row(), "float:", result.float_ops)
    assert result.validate_ok, result.issues
    assert result.capture == ("torch.export" if fmt == "pt2" else result.capture)  # no silent fx fallback
    assert result.quantizers > 0
    floor = _FLOOR.get(entry.name, 0.95)
    assert result.sim_cosine >= floor, result.row()
    assert result.qdq_cosine >= floor, result.row()
    assert result.onnx_cosine >= 0.9999, result.row()  # the FP32 export computes the module's output


def test_every_format_is_known():
    assert set(FORMATS) == {"pt2", "onnx", "onnx-legacy"}
