"""Running ONNX models with ONNX Runtime (CPU) and comparing their outputs with the simulation.

>>> outs = run_onnx("model_qdq.onnx", [x.numpy()])                 # doctest: +SKIP
>>> compare_outputs(sim(x), outs[0])                              # doctest: +SKIP
{'sqnr_db': 41.2, 'top1_agreement': 1.0, 'cosine': 0.9999}
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from core.errors import LowbitError


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class OnnxRunner:
    """One ONNX Runtime CPU session, reused across calls (creating a session costs far more than a batch).

    ``threads`` bounds ORT's intra-op threads (None: ORT's default).
    """

    def __init__(self, path: str | os.PathLike[str] | bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        model = path if isinstance(path, bytes) else os.fspath(path)
        try:
            self.session = ort.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types; keep the engine's contract
            raise LowbitError(f"ONNX Runtime cannot load the model: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, inputs: Sequence[Any] | Mapping[str, Any]) -> list[np.ndarray]:
        """All outputs for one array per graph input (in order) or a name → array mapping."""
        names = self.input_names
        if isinstance(inputs, Mapping):
            missing = [n for n in names if n not in inputs]
            if missing:
                raise LowbitError(f"missing ONNX inputs {missing}; the model takes {names}")
            feed = {n: _as_numpy(inputs[n]) for n in names}
        else:
            if len(inputs) != len(names):
                raise LowbitError(f"the model takes {len(names)} inputs ({names}), got {len(inputs)}")
            feed = {n: _as_numpy(v) for n, v in zip(names, inputs, strict=True)}
        feed = {n: v.astype(np.float32) if v.dtype == np.float64 else v for n, v in feed.items()}
        return [np.asarray(o) for o in self.session.run(None, feed)]


def run_onnx(
    path: str | os.PathLike[str] | bytes,
    inputs: Sequence[Any] | Mapping[str, Any],
    threads: int | None = None,
) -> list[np.ndarray]:
    """Run an ONNX model (path or serialized bytes) once on ONNX Runtime's CPU provider; all outputs.

    ``inputs`` is one array per graph input, in order, or a name → array mapping (numpy arrays or
    torch tensors). For many batches, keep an :class:`OnnxRunner` instead.
    """
    return OnnxRunner(path, threads).run(inputs)


def compare_outputs(reference: Any, candidate: Any) -> dict[str, float]:
    """Agreement of ``candidate`` with ``reference`` (e.g. ORT logits vs simulated logits).

    ``sqnr_db`` = 10·log10(Σref² / Σ(ref − cand)²) (inf when identical); ``cosine`` over the
    flattened tensors; ``top1_agreement`` = fraction of rows (last axis = classes) whose argmax
    matches (1.0 for 0-d/1-d outputs that are equal in argmax).
    """
    ref = _as_numpy(reference).astype(np.float64)
    cand = _as_numpy(candidate).astype(np.float64)
    if ref.shape != cand.shape:
        raise LowbitError(f"cannot compare outputs of shapes {ref.shape} and {cand.shape}")
    noise = float(np.sum((ref - cand) ** 2))
    signal = float(np.sum(ref**2))
    sqnr = float("inf") if noise == 0 else 10.0 * float(np.log10(max(signal, 1e-300) / noise))
    denom = float(np.linalg.norm(ref) * np.linalg.norm(cand))
    cosine = float(np.dot(ref.reshape(-1), cand.reshape(-1)) / denom) if denom > 0 else float(noise == 0)
    if ref.ndim >= 2:
        top1 = float(np.mean(ref.argmax(axis=-1) == cand.argmax(axis=-1)))
    else:
        top1 = float(ref.argmax() == cand.argmax()) if ref.size else 1.0
    return {"sqnr_db": sqnr, "top1_agreement": top1, "cosine": cosine}
