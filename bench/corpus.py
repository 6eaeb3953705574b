"""``python -m bench corpus``: the transformers corpus (tests/corpus) through lowbit and through ONNX Runtime's
own quantizer, per model and ONNX format.

Columns: validate result, enabled quantizers, ops left in float (the validator's float_ops), W8A8 output cosine vs
FP32 of (a) lowbit's simulation, (b) lowbit's ``model_qdq.onnx`` in ONNX Runtime, (c) ONNX Runtime's
``quantize_static`` (QDQ, per-channel, MinMax) on the same file and calibration data — the peer
baseline — and wall time of lowbit's load → validate → QuantSim → export. FP32 is the uploaded ONNX file
in ONNX Runtime; evaluation inputs are 3 fresh samples (not the export's batch of 2), so a batch size
baked into a graph shows as a failure. Both QDQ models run with ONNX Runtime's default optimizations
(which fuse DQ→Conv→Q into QLinearConv: on CPUs without VNNI that saturates, see NOTES.md).

Options: ``--models=a,b`` (default: all), ``--formats=onnx,onnx-legacy``.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.registry import register

EVAL_SAMPLES = 3


@dataclass
class Row:
    model: str
    fmt: str
    validate: str = "-"
    quantizers: int = 0
    float_ops: int = 0
    sim: float = math.nan
    qdq: float = math.nan
    ort: float = math.nan
    seconds: float = math.nan
    note: str = ""


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if x.shape != y.shape:
        return math.nan
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-30))


def _session(path: Path):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT's "removing unused initializer" notes would drown the table
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ort_quantize_static(fp32: Path, calib: dict[str, np.ndarray], out: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationMethod

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            count = len(next(iter(calib.values())))
            self.batches = iter([{k: v[i : i + 4] for k, v in calib.items()} for i in range(0, count, 4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its pre-processing advice and per-LayerNorm notes would drown the table
    try:
        quantize_static(
            str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip
    finally:
        root.setLevel(level)
    return out


def run_case(entry, fmt: str) -> Row:  # type: ignore[no-untyped-def]
    import torch

    from core.export import export_sim
    from core.graph import validate_model
    from core.io import load_data, load_model
    from core.quantsim import QuantSim
    from tests.corpus.models import sample_inputs

    row = Row(entry.name, fmt)
    path = entry.path(fmt)
    samples = {k: v.numpy() for k, v in sample_inputs(entry.spec, EVAL_SAMPLES, seed=99).items()}
    feeds = {name: samples[name] for name in entry.input_names}
    with torch.no_grad():  # FP32: the module the file was exported from (ORT refuses some exports)
        out = entry.module()(*(torch.from_numpy(feeds[n]) for n in entry.input_names))
    reference = (out[0] if isinstance(out, tuple) else out).numpy()
    with np.load(entry.calibration()) as data:
        calib = {name: data[name] for name in entry.input_names}
    start = time.perf_counter()
    try:
        loaded = load_model(path, calib=entry.calibration())
        report = validate_model(loaded.graph_source, loaded.example_inputs)
        row.validate, row.float_ops = ("ok" if report.ok else "issues"), len(report.float_ops)
        sim = QuantSim(loaded, param_bw=8, output_bw=8)
        sim.compute_encodings(
            load_data(entry.calibration(), loaded.input_names).for_model(loaded), batch_size=4
        )
        row.quantizers = sum(q.enabled for q in sim.quantizers().values())
        with torch.no_grad():
            out = sim.model(*(torch.from_numpy(feeds[n]) for n in loaded.input_names))
        row.sim = _cosine(reference, (out[0] if isinstance(out, tuple) else out).numpy())
        with tempfile.TemporaryDirectory() as tmp:
            result = export_sim(sim, tmp)
            row.seconds = time.perf_counter() - start
            assert result.qdq_onnx is not None
            row.qdq = _cosine(reference, _session(result.qdq_onnx).run(None, feeds)[0])
    except Exception as exc:  # a bench row reports the failure and goes on
        row.note = f"lowbit: {type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            peer = _ort_quantize_static(path, calib, Path(tmp) / "ort_qdq.onnx")
            row.ort = _cosine(reference, _session(peer).run(None, feeds)[0])
    except Exception as exc:
        row.note += f" ort: {type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
    return row


def _option(args: list[str], name: str) -> list[str] | None:
    for a in args:
        if a.startswith(f"--{name}="):
            return [v for v in a.split("=", 1)[1].split(",") if v]
    return None


@register(
    "corpus",
    "transformers corpus via ONNX: validate, quantizers, float ops, W8A8 cosine vs ORT quantize_static",
)
def corpus(args: list[str]) -> None:
    import onnxruntime as ort

    from tests.corpus.build import corpus_entries

    ort.set_default_logger_severity(3)
    formats = _option(args, "formats") or ["onnx", "onnx-legacy"]
    print(f"{'model':16s} {'format':12s} {'validate':8s} {'quant':>5s} {'float':>5s} "
          f"{'sim cos':>8s} {'qdq cos':>8s} {'ORT cos':>8s} {'time s':>7s}  note")  # fmt: skip
    for entry in corpus_entries(_option(args, "models")):
        for fmt in formats:
            if fmt not in entry.formats:
                print(
                    f"{entry.name:16s} {fmt:12s} exporter gap: {entry.spec.exporter_gaps.get(fmt, '')[:80]}"
                )
                continue
            r = run_case(entry, fmt)
            flag = "" if not (r.qdq < r.ort - 1e-4) else " <ORT"
            print(f"{r.model:16s} {r.fmt:12s} {r.validate:8s} {r.quantizers:5d} {r.float_ops:5d} "
                  f"{r.sim:8.4f} {r.qdq:8.4f} {r.ort:8.4f} {r.seconds:7.1f}  {r.note}{flag}", flush=True)  # fmt: skip
