"""Stage 4: evaluate FP32 vs the simulated model vs the exported QDQ model in ONNX Runtime.

With evaluation data that holds labels the metric is top-1 accuracy of the first output; otherwise
(or with ``eval_metric='cosine'``) it is the cosine similarity of the outputs against FP32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.export.runtime import compare_outputs
from core.runtime_verdict import sim_warning

MAX_EVAL_SAMPLES = 5000
BATCH = 256


def _first(output: Any) -> torch.Tensor:
    while isinstance(output, tuple | list):
        output = output[0]
    return output


def _outputs_torch(module: Any, data: Any, device: str) -> np.ndarray:
    chunks = []
    with torch.no_grad():
        for batch in data.batches(BATCH):
            out = _first(module(*(t.to(device) for t in batch)))
            chunks.append(out.detach().float().cpu().numpy())
    return np.concatenate(chunks)[:MAX_EVAL_SAMPLES]


def _outputs_onnx(path: Path, data: Any) -> np.ndarray:
    from core.export import OnnxRunner

    runner = OnnxRunner(path, threads=1)  # one session for all batches
    chunks = []
    for batch in data.batches(BATCH):
        chunks.append(np.asarray(runner.run([t.numpy() for t in batch])[0], dtype=np.float32))
    return np.concatenate(chunks)[:MAX_EVAL_SAMPLES]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float((num / den).mean())


def evaluate(
    sim: Any, fp_module: Any, data: Any, qdq_path: Path | None, device: str, metric: str | None
) -> dict[str, Any]:
    """Metrics of FP32 (``fp_module``), ``sim.model`` and (if given) the QDQ ONNX file on ``data``.

    Returns ``{"metric": name, "fp32": x, "sim": y, "onnxruntime": z, "drop": fp32 - (z if ONNX Runtime
    ran else y), "sim_drop": fp32 - y, "sim_vs_onnxruntime": {"top1_agreement", "sqnr_db"}}`` plus
    ``"warning"`` naming the likely cause when ORT and the sim disagree (core/runtime_verdict.py).
    """
    labels = getattr(data, "labels", None)
    if labels is not None and metric in (None, "accuracy"):
        name = "accuracy"
    else:
        name = "cosine"
    fp = _outputs_torch(fp_module, data, device)
    sq = _outputs_torch(sim.model, data, device)
    ort = _outputs_onnx(qdq_path, data) if qdq_path is not None else None
    result: dict[str, Any] = {"metric": name, "samples": len(fp)}
    if name == "accuracy":
        y = np.asarray(labels).reshape(-1)[: len(fp)]
        result["fp32"] = float((fp.reshape(len(fp), -1).argmax(1) == y).mean())
        result["sim"] = float((sq.reshape(len(sq), -1).argmax(1) == y).mean())
        if ort is not None:
            result["onnxruntime"] = float((ort.reshape(len(ort), -1).argmax(1) == y).mean())
    else:
        result["fp32"] = 1.0
        result["sim"] = _cosine(fp, sq)
        if ort is not None:
            result["onnxruntime"] = _cosine(fp, ort)
    result["sim_drop"] = result["fp32"] - result["sim"]
    # The drop that counts is the deployed model's: the QDQ model in ONNX Runtime when it ran.
    result["drop"] = result["fp32"] - result.get("onnxruntime", result["sim"])
    if ort is not None:
        result["sim_vs_onnxruntime_cosine"] = _cosine(sq, ort)
        agreement = compare_outputs(sq.reshape(len(sq), -1), ort.reshape(len(ort), -1))
        result["sim_vs_onnxruntime"] = {k: agreement[k] for k in ("top1_agreement", "sqnr_db")}
        warning = sim_warning(sim, agreement)
        if warning is not None:
            result["warning"] = warning
    return result
