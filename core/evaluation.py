"""FP32 vs simulated vs ONNX Runtime: the results table every job and the CLI report.

With labels the metric is top-1 accuracy of the first output; without, it is label-free:
cosine similarity of the outputs with the FP32 model's (FP32 scores 1.0). ONNX Runtime runs
the exported QDQ model — the real integer runtime — and its agreement with the simulation
(top-1 agreement, logits SQNR) is reported beside it.

>>> report = evaluate(sim, data, qdq_path="out/model_qdq.onnx")   # doctest: +SKIP
>>> print(report.format_table())                                   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.analysis.metrics import cosine, flat_outputs, sqnr_db
from core.export.runtime import OnnxRunner
from core.runtime_verdict import sim_warning


@dataclass(frozen=True)
class EvaluationReport:
    metric: str  # "accuracy" or "cosine"
    num_samples: int
    fp32: float
    simulated: float
    onnxruntime: float | None = None
    sim_vs_fp32_sqnr_db: float | None = None
    sim_vs_ort: dict[str, float] = field(default_factory=dict)
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        fmt = "{:.4f}"
        rows = [
            (f"FP32 {self.metric}", fmt.format(self.fp32)),
            (f"simulated {self.metric}", fmt.format(self.simulated)),
        ]
        if self.onnxruntime is not None:
            rows.append((f"ONNX Runtime (QDQ) {self.metric}", fmt.format(self.onnxruntime)))
        if self.sim_vs_fp32_sqnr_db is not None:
            rows.append(("simulated vs FP32 output SQNR (dB)", f"{self.sim_vs_fp32_sqnr_db:.1f}"))
        if self.sim_vs_ort:
            rows.append(
                ("ONNX Runtime vs simulated top-1 agreement", fmt.format(self.sim_vs_ort["top1_agreement"]))
            )
            rows.append(("ONNX Runtime vs simulated SQNR (dB)", f"{self.sim_vs_ort['sqnr_db']:.1f}"))
        return rows

    def format_table(self) -> str:
        rows = self.rows()
        width = max(len(r[0]) for r in rows)
        lines = [f"{'measure'.ljust(width)}  value", f"{'-' * width}  -----"]
        lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
        if self.warning:
            lines.append(f"WARNING: {self.warning}")
        return "\n".join(lines)


def evaluate(
    sim: Any,
    data: Any,
    qdq_path: str | Path | None = None,
    *,
    batch_size: int = 64,
    max_samples: int | None = None,
    progress: Any = None,
) -> EvaluationReport:
    """Score ``sim.fp_model``, ``sim.model`` and (optionally) the QDQ ONNX model on ``data``.

    ``data`` is a core.io.CalibrationData; labels (if present) make the metric accuracy.
    """
    labels = getattr(data, "labels", None)
    fp_out, sim_out, ort_out = [], [], []
    seen = 0
    first_width: int | None = None
    total = data.num_samples if max_samples is None else min(max_samples, data.num_samples)
    runner = OnnxRunner(qdq_path, threads=max(1, torch.get_num_threads())) if qdq_path is not None else None
    with torch.no_grad():
        for inputs in data.batches(batch_size):
            if seen >= total:
                break
            inputs = tuple(t[: total - seen] for t in inputs)
            fp_raw = sim.fp_model(*inputs)
            fp_out.append(flat_outputs(fp_raw))
            sim_out.append(flat_outputs(sim.model(*inputs)))
            if runner is not None:
                outs = runner.run(inputs)
                ort_out.append(
                    torch.from_numpy(np.concatenate([o.reshape(o.shape[0], -1) for o in outs], axis=1))
                )
            if first_width is None:
                first_width = _first_width(fp_raw)
            seen += inputs[0].shape[0]
            if progress is not None:
                progress(seen / total)
    fp, q = torch.cat(fp_out), torch.cat(sim_out)
    ort = torch.cat(ort_out).float() if ort_out else None
    agreement: dict[str, float] = {}
    if ort is not None:
        agreement = {
            "top1_agreement": float((ort.argmax(1) == q.argmax(1)).float().mean()),
            "sqnr_db": sqnr_db(q, ort),
            "cosine": cosine(q, ort),
        }
    if labels is not None:
        y = torch.as_tensor(np.asarray(labels[:seen])).reshape(-1).long()

        def score(out: torch.Tensor) -> float:
            # Accuracy is top-1 of the first output (the logits of a classifier).
            return float((out[:, :first_width].argmax(1) == y).float().mean())

        metric = "accuracy"
        fp_score, sim_score = score(fp), score(q)
        ort_score = score(ort) if ort is not None else None
    else:
        metric = "cosine"
        fp_score = 1.0
        sim_score = cosine(fp, q)
        ort_score = cosine(fp, ort) if ort is not None else None
    return EvaluationReport(
        metric=metric,
        num_samples=seen,
        fp32=fp_score,
        simulated=sim_score,
        onnxruntime=ort_score,
        sim_vs_fp32_sqnr_db=sqnr_db(fp, q),
        sim_vs_ort=agreement,
        warning=sim_warning(sim, agreement) if agreement and hasattr(sim, "config") else None,
    )


def _first_width(outputs: Any) -> int:
    first = (
        outputs
        if isinstance(outputs, torch.Tensor)
        else flat_outputs(outputs[0] if isinstance(outputs, tuple | list) else outputs)
    )
    return int(first.reshape(first.shape[0], -1).shape[1])
