"""Builds the digits example's artifacts: model.pt2, model.onnx, calib.npz, eval.npz.

Artifacts are cached: a stamp file holds a hash of the example's source files and the seed, and
a build with the same hash reuses what is on disk.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from examples.digits.model import INPUT_NAME, OUTPUT_NAME
from examples.digits.train import SEED, accuracy, load_split, train

DEFAULT_OUT = Path(__file__).resolve().parent / "artifacts"
CALIB_SAMPLES = 500
ONNX_OPSET = 17
_STAMP = "stamp.json"
_SOURCES = ("model.py", "train.py", "build.py")


@dataclass(frozen=True)
class Paths:
    """Where the example's artifacts are, and the FP32 accuracy measured on ``eval_data``."""

    out_dir: Path
    model_pt2: Path
    model_onnx: Path
    calib_data: Path
    eval_data: Path
    fp32_accuracy: float


def _paths(out_dir: Path, fp32_accuracy: float) -> Paths:
    return Paths(
        out_dir=out_dir,
        model_pt2=out_dir / "model.pt2",
        model_onnx=out_dir / "model.onnx",
        calib_data=out_dir / "calib.npz",
        eval_data=out_dir / "eval.npz",
        fp32_accuracy=fp32_accuracy,
    )


def _content_hash(seed: int) -> str:
    digest = hashlib.sha256(f"seed={seed};torch={torch.__version__}".encode())
    here = Path(__file__).resolve().parent
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def _cached(out_dir: Path, content_hash: str) -> Paths | None:
    stamp = out_dir / _STAMP
    if not stamp.is_file():
        return None
    try:
        recorded = json.loads(stamp.read_text())
    except json.JSONDecodeError:
        return None
    paths = _paths(out_dir, float(recorded.get("fp32_accuracy", 0.0)))
    files = (paths.model_pt2, paths.model_onnx, paths.calib_data, paths.eval_data)
    if recorded.get("hash") == content_hash and all(p.is_file() for p in files):
        return paths
    return None


def build(out_dir: str | os.PathLike[str] | None = None, seed: int = SEED) -> Paths:
    """Train (or reuse) the digits CNN and write its artifacts into ``out_dir``.

    Contract: ``model.pt2`` is a ``torch.export`` program with a dynamic batch dimension,
    ``model.onnx`` the same network (opset 17, input ``"input"``, output ``"logits"``),
    ``calib.npz`` holds ``CALIB_SAMPLES`` unlabeled training images under the key ``"input"``, and
    ``eval.npz`` the held-out images (``"input"``) with their ``"labels"``. Deterministic for a
    given seed. Example::

        paths = build()
        ep = torch.export.load(paths.model_pt2)
    """
    target = Path(out_dir) if out_dir is not None else DEFAULT_OUT
    content_hash = _content_hash(seed)
    cached = _cached(target, content_hash)
    if cached is not None:
        return cached
    target.mkdir(parents=True, exist_ok=True)
    # Several test sessions may build at once: one trains, the others wait and reuse its result.
    with open(target / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _cached(target, content_hash)
        if cached is not None:
            return cached
        return _build_into(target, content_hash, seed)


def _build_into(target: Path, content_hash: str, seed: int) -> Paths:
    split = load_split(seed)
    model = train(split, seed=seed)
    fp32 = accuracy(model, split.eval_x, split.eval_y)
    paths = _paths(target, fp32)
    # Write into a temporary folder first so an interrupted build never leaves a half-written cache.
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        staged = _paths(Path(tmp), fp32)
        _export(model, split.train_x[:2], staged)
        calib: dict[str, Any] = {INPUT_NAME: split.train_x[:CALIB_SAMPLES]}
        evaluation: dict[str, Any] = {INPUT_NAME: split.eval_x, "labels": split.eval_y}
        np.savez(staged.calib_data, **calib)
        np.savez(staged.eval_data, **evaluation)
        for name in ("model_pt2", "model_onnx", "calib_data", "eval_data"):
            os.replace(getattr(staged, name), getattr(paths, name))
    (target / _STAMP).write_text(json.dumps({"hash": content_hash, "fp32_accuracy": fp32}))
    return paths


def _export(model: torch.nn.Module, sample: np.ndarray, paths: Paths) -> None:
    example = (torch.from_numpy(sample),)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, example, dynamic_shapes=({0: batch},))
    torch.export.save(program, paths.model_pt2)
    # The TorchScript-based exporter names tensors like AIMET's golden files (/relu1/Relu_output_0).
    torch.onnx.export(
        model,
        example,
        str(paths.model_onnx),
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=ONNX_OPSET,
    )
