"""The corpus through lowbit as a user runs it: load the file → validate → QuantSim W8A8 → export → QDQ in ORT.

Given a model written by a library nobody here wrote (transformers, random-init small configs) and exported
by torch 2.13, when its file goes through the pipeline, then it validates with no blocking issue (ops left in
float are named), quantizes, exports, and both exported files (model.onnx, model_qdq.onnx) run in ONNX
Runtime at two batch sizes and, where the file's sequence is dynamic, two lengths other than the export's
(tests.corpus.pipeline.EVAL_SIZES), with outputs close to the FP32 module's.

CI time: one test per architecture runs its ``.pt2`` and one ONNX file (the TorchScript exporter's, which
builds in about a second where the dynamo exporter takes several; GPT-2 has only the dynamo file), sharing
one reference module. MiniLM runs as a module in tests/core/test_minilm_pipeline.py. Every file of every
model, MiniLM's included, also runs as a service job in tests/e2e/test_corpus_jobs.py.
``LOWBIT_CORPUS=full`` runs every (model, format) pair as its own test, both ONNX exporters included.
"""

from __future__ import annotations

import os

import pytest

from tests.corpus.build import FORMATS, CorpusEntry, corpus_entries
from tests.corpus.pipeline import FLOAT_OPS, run_case

pytestmark = pytest.mark.slow

_MODULE_ONLY = {"minilm"}  # 90 MB of weights; its module path is tests/core/test_minilm_pipeline.py
# W8A8 per-tensor min-max on random-init nets: the floors are the measured figures less a margin.
_FLOOR = {"minilm": 0.7}
# transformers' MobileNetV2 as TorchScript ONNX (BN folded into the convs): ONNX Runtime fuses
# DQ→Conv→Clip→Q into QLinearConv, whose u8×s8 kernels saturate on CPUs without VNNI (NOTES.md,
# "Outside checks"): 0.941 there against 0.969 with session.disable_quant_qdq=1 and 0.983 simulated.
_QDQ_FLOOR = {"mobilenet_v2": 0.9}
_FULL = os.environ.get("LOWBIT_CORPUS") == "full"


def ci_formats(entry: CorpusEntry) -> tuple[str, ...]:
    """The formats CI runs for ``entry``: .pt2 and the cheaper ONNX file."""
    return ("pt2", "onnx-legacy" if "onnx-legacy" in entry.formats else "onnx")


def _cases() -> list[object]:
    cases = []
    for entry in corpus_entries():
        if _FULL:
            cases += [pytest.param(entry, (fmt,), id=f"{entry.name}-{fmt}") for fmt in entry.formats]
        elif entry.name not in _MODULE_ONLY:
            cases.append(pytest.param(entry, ci_formats(entry), id=entry.name))
    return cases


@pytest.mark.parametrize(("entry", "formats"), _cases())
def test_corpus_case_validates_quantizes_exports_and_runs_in_ort(entry, formats):
    failures = []
    for fmt in formats:
        result = run_case(entry, fmt)
        print(result.row(), "float:", result.float_ops)
        floor = _FLOOR.get(entry.name, 0.95)
        checks = {
            "validates": result.validate_ok,
            "no silent fx fallback": fmt != "pt2" or result.capture == "torch.export",
            "quantizers placed": result.quantizers > 0,
            "no unexpected float ops": set(result.float_ops) <= FLOAT_OPS.get((entry.name, fmt), set()),
            "sim close to FP32": result.sim_cosine >= floor,
            "QDQ close to FP32 at other sizes": result.qdq_cosine >= _QDQ_FLOOR.get(entry.name, floor),
            "model.onnx computes FP32": result.onnx_cosine >= 0.9999,
        }
        failures += [
            f"{fmt}: {what}: {result.row()} {result.issues[:3]}" for what, ok in checks.items() if not ok
        ]
    assert not failures, failures


def test_every_format_is_known():
    assert set(FORMATS) == {"pt2", "onnx", "onnx-legacy"}
