"""One corpus case end to end, as a user runs it: load the file → validate → QuantSim W8A8 → export → QDQ in ORT.

The FP32 reference is the Python module the file was exported from; the evaluation batch has EVAL_BATCH
samples (not the export's batch of 2), so a batch size baked into the imported or exported graph shows.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tests.corpus.build import CorpusEntry
from tests.corpus.models import sample_inputs

EVAL_BATCH = 3


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
    seconds: float = 0.0

    def row(self) -> str:
        return (
            f"{self.name:16s} {self.fmt:12s} {self.stage:9s} validate={'ok' if self.validate_ok else 'FAIL'} "
            f"quantizers={self.quantizers:4d} float_ops={len(self.float_ops):3d} "
            f"sim_cos={self.sim_cosine:.4f} qdq_cos={self.qdq_cosine:.4f} {self.seconds:6.1f}s"
        )


def _cosine(reference: torch.Tensor, candidate: object) -> float:
    ref = reference.detach().double().flatten()
    cand = torch.as_tensor(candidate).double().flatten()
    return float(torch.nn.functional.cosine_similarity(ref, cand, dim=0))


def run_case(entry: CorpusEntry, fmt: str, out_dir: Path | None = None) -> CaseResult:
    """Run every stage it can; a stage's exception propagates after ``result.stage`` names it."""
    from core.export import export_sim, run_onnx
    from core.graph import validate_model
    from core.io import load_data, load_model
    from core.quantsim import QuantSim

    result = CaseResult(entry.name, fmt)
    start = time.perf_counter()
    path = entry.path(fmt)
    loaded = load_model(path)
    result.stage = "validate"
    report = validate_model(loaded.graph_source, loaded.example_inputs)
    result.validate_ok, result.capture = report.ok, report.capture
    result.issues = [f"{i.node}: {i.op}: {i.problem}" for i in report.issues]
    result.float_ops = [i.op for i in getattr(report, "float_ops", ())]
    result.stage = "quantsim"
    calib = load_data(entry.calibration(), loaded.input_names).for_model(loaded)
    sim = QuantSim(loaded, param_bw=8, output_bw=8)
    sim.compute_encodings(calib, num_batches=2, batch_size=4)
    result.quantizers = sum(q.enabled for q in sim.quantizers().values())
    samples = sample_inputs(entry.spec, EVAL_BATCH, seed=99)
    inputs = tuple(samples[name] for name in entry.input_names)
    with torch.no_grad():
        reference = entry.module()(*inputs)
        result.sim_cosine = _cosine(reference, sim.model(*inputs))
    result.stage = "export"
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_sim(sim, out_dir or Path(tmp))
        result.stage = "ort"
        assert exported.qdq_onnx is not None
        (qdq_output, *_) = run_onnx(exported.qdq_onnx, {n: samples[n].numpy() for n in entry.input_names})
    result.qdq_cosine = _cosine(reference, qdq_output)
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
