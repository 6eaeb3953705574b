"""One corpus case end to end, as a user runs it: load the file → validate → QuantSim W8A8 → export → QDQ in ORT.

The FP32 reference is the Python module the file was exported from. The exported ``model.onnx`` and
``model_qdq.onnx`` run in ONNX Runtime at EVAL_SIZES: two batch sizes, neither the export's 2, and for
models with a dynamic sequence two sequence lengths, neither the export's 16, so a size baked into the
imported or exported graph shows (``qdq_cosine`` and ``onnx_cosine`` are the worst over the sizes).
"""

from __future__ import annotations

import functools
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tests.corpus.build import CorpusEntry, corpus_entries
from tests.corpus.models import sample_inputs

EVAL_BATCH = 3
# (batch, {dynamic axis name: length}) the exported files run at: text "seq" (exported at 16), audio
# "samples" (exported at 1600).
EVAL_SIZES = ((EVAL_BATCH, {"seq": 9, "samples": 1200}), (1, {"seq": 24, "samples": 2000}))
# The ops a (model, format) leaves in float, named in the validation report and a job's ``float_ops``
# (every other case quantizes every op): MobileViT's ONNX files resize to an unfold size computed from
# shapes (a Resize with computed sizes), which the TorchScript exporter computes as float Ceil.
FLOAT_OPS = {
    ("mobilevit", "onnx"): {"interpolate_to_size"},
    ("mobilevit", "onnx-legacy"): {"ceil", "interpolate_to_size"},
}


@dataclass
class CaseResult:
    """What one (model, format) case measured; ``stage`` is the last stage reached ("done" when all ran)."""

    name: str
    fmt: str
    stage: str = "load"
    validate_ok: bool = False
    capture: str = ""
    float_ops: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)
    quantizers: int = 0
    sim_cosine: float = float("nan")
    qdq_cosine: float = float("nan")
    onnx_cosine: float = float("nan")
    seconds: float = 0.0

    def row(self) -> str:
        return (
            f"{self.name:16s} {self.fmt:12s} {self.stage:9s} validate={'ok' if self.validate_ok else 'FAIL'} "
            f"quantizers={self.quantizers:4d} float_ops={len(self.float_ops):3d} "
            f"sim_cos={self.sim_cosine:.4f} qdq_cos={self.qdq_cosine:.4f} onnx_cos={self.onnx_cosine:.4f} "
            f"{self.seconds:6.1f}s"
        )


def _cosine(reference: torch.Tensor, candidate: object) -> float:
    ref = reference.detach().double()
    cand = torch.as_tensor(candidate).double()
    assert ref.shape == cand.shape, f"output shape {tuple(cand.shape)}, FP32 module's {tuple(ref.shape)}"
    return float(torch.nn.functional.cosine_similarity(ref.flatten(), cand.flatten(), dim=0))


@functools.cache
def _modules(name: str, directory: Path) -> torch.nn.Module:
    (entry,) = (e for e in corpus_entries([name]) if e.directory == directory)
    return entry.module()


def reference_module(entry: CorpusEntry) -> torch.nn.Module:
    """The FP32 module the entry's files were exported from, built once per process (eval mode, only
    ever called under no_grad): building a transformers model costs more than running it."""
    return _modules(entry.name, entry.directory)


def sized_inputs(entry: CorpusEntry, batch: int, lengths: dict[str, int]) -> dict[str, torch.Tensor]:
    """Fresh samples with ``batch`` rows; inputs with a dynamic axis named in ``lengths`` ("seq",
    "samples") cut or tiled to that length."""
    samples = sample_inputs(entry.spec, batch, seed=99 + batch)
    for name, axes in entry.spec.dynamic.items():
        for axis, dim in axes.items():
            if dim in lengths:
                tensor, length = samples[name], lengths[dim]
                reps = -(-length // tensor.shape[axis])
                samples[name] = torch.cat([tensor] * reps, axis).narrow(axis, 0, length)
    return samples


def run_case(entry: CorpusEntry, fmt: str, out_dir: Path | None = None) -> CaseResult:
    """Run every stage it can; a stage's exception propagates after ``result.stage`` names it."""
    from core.export import OnnxRunner, export_sim
    from core.graph.validator import check_model
    from core.io import load_data, load_model
    from core.quantsim import QuantSim

    result = CaseResult(entry.name, fmt)
    start = time.perf_counter()
    path = entry.path(fmt)
    # As a service job runs it: the calibration file shapes the examples, one capture serves the
    # validation report and the QuantSim (core.graph.validator.check_model).
    loaded = load_model(path, calib=entry.calibration())
    result.stage = "validate"
    prepared, report = check_model(loaded.graph_source, loaded.example_inputs)
    result.validate_ok, result.capture = report.ok, report.capture
    result.issues = [f"{i.node}: {i.op}: {i.problem}" for i in report.issues]
    result.float_ops = [i.op for i in getattr(report, "float_ops", ())]
    if prepared is None:
        raise AssertionError(f"{entry.name} {fmt}: not captured: {result.issues}")
    result.stage = "quantsim"
    calib = load_data(entry.calibration(), loaded.input_names).for_model(loaded)
    sim = QuantSim(prepared, loaded.example_inputs, param_bw=8, output_bw=8, prepared=True)
    sim.use_io_of(loaded)
    sim.compute_encodings(calib, num_batches=2, batch_size=4)
    result.quantizers = sum(q.enabled for q in sim.quantizers().values())
    samples = sample_inputs(entry.spec, EVAL_BATCH, seed=99)
    inputs = tuple(samples[name] for name in entry.input_names)
    with torch.no_grad():
        reference = reference_module(entry)(*inputs)
        result.sim_cosine = _cosine(reference, sim.model(*inputs))
    result.stage = "export"
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_sim(sim, out_dir or Path(tmp))
        result.stage = "ort"
        assert exported.qdq_onnx is not None
        qdq_runner, fp32_runner = OnnxRunner(exported.qdq_onnx), OnnxRunner(exported.onnx)
        qdq, fp32 = [], []
        for batch, lengths in EVAL_SIZES:
            sized = sized_inputs(entry, batch, lengths)
            with torch.no_grad():
                expected = reference_module(entry)(*(sized[n] for n in entry.input_names))
            feeds = {n: sized[n].numpy() for n in entry.input_names}
            qdq.append(_cosine(expected, qdq_runner.run(feeds)[0]))
            fp32.append(_cosine(expected, fp32_runner.run(feeds)[0]))
    result.qdq_cosine, result.onnx_cosine = min(qdq), min(fp32)
    result.stage = "done"
    result.seconds = time.perf_counter() - start
    return result


def main(argv: list[str]) -> int:
    """``python -m tests.corpus.pipeline [FORMAT] [NAMES...]``: one row per case (bench-like smoke run)."""
    import traceback

    from tests.corpus.build import FORMATS, corpus_entries

    fmt = argv[0] if argv and argv[0] in FORMATS else "pt2"
    names = [a for a in argv if a not in FORMATS] or None
    for entry in corpus_entries(names):
        if fmt not in entry.formats:
            print(f"{entry.name:16s} {fmt:12s} exporter gap: {entry.spec.exporter_gaps[fmt]}")
            continue
        try:
            print(run_case(entry, fmt).row(), flush=True)
        except Exception as exc:
            print(f"{entry.name:16s} {fmt:12s} FAILED {type(exc).__name__}: {str(exc)[:400]}", flush=True)
            if "-v" in argv:
                traceback.print_exc()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
