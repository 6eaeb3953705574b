"""QuantAnalyzer: why a quantized model loses accuracy, as JSON files and one HTML report.

>>> sim = QuantSim(model, example, param_bw=8, output_bw=8)           # doctest: +SKIP
>>> result = QuantAnalyzer(sim, calib_batches).analyze("out/")      # doctest: +SKIP
>>> result.ranking[0]["layer"], result.ranking[0]["action"]         # doctest: +SKIP

Without an evaluation function the metric is label-free: the cosine similarity (or SQNR) of the
model's outputs against the FP32 model's on the evaluation (else calibration) batches.
Files in ``out_dir``: ``analysis.json`` (everything), ``sensitivity.json``, ``ranges.json``,
``layer_error.json``, ``ranking.json``, ``histograms.json``, ``report.html`` and ``plots/*.png``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.analysis import plots
from core.analysis.activations import collect_activation_stats
from core.analysis.histograms import histogram_data, render_histograms
from core.analysis.layer_error import layer_output_error, quantizer_sqnr
from core.analysis.metrics import EvalFn, OutputAgreement
from core.analysis.ranges import activation_ranges, weight_ranges
from core.analysis.ranking import rank_layers
from core.analysis.report_html import image, render_report, table
from core.analysis.sensitivity import (
    global_sensitivity,
    layer_groups,
    per_layer_sensitivity,
    per_quantizer_sensitivity,
)
from core.errors import CancelledError, ConfigError


@dataclass
class AnalysisResult:
    metric_name: str
    global_metrics: dict[str, float]
    per_layer: dict[str, dict[str, float]]
    per_quantizer: dict[str, float]
    weight_ranges: dict[str, dict[str, Any]]
    activation_ranges: dict[str, dict[str, Any]]
    layer_error: dict[str, dict[str, float]]
    quantizer_sqnr: dict[str, float]
    ranking: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)

    def costly_quantizers(self, n: int = 10) -> list[tuple[str, float]]:
        """Quantizers whose removal gains the most metric (needs per_quantizer=True), best first."""
        base = self.global_metrics["quantized"]
        gains = [(k, v - base) for k, v in self.per_quantizer.items()]
        return sorted(gains, key=lambda kv: kv[1], reverse=True)[:n]


def as_batches(data: Any, batch_size: int, num_batches: int | None) -> list[tuple[torch.Tensor, ...]]:
    """A list of input tuples from an iterable of batches, a tensor (split), or a CalibrationData."""
    if data is None:
        return []
    if hasattr(data, "batches"):
        source: Iterable[Any] = data.batches(batch_size)
    elif isinstance(data, torch.Tensor):
        source = data.split(batch_size)
    else:
        source = data
    out: list[tuple[torch.Tensor, ...]] = []
    for batch in source:
        out.append(tuple(batch) if isinstance(batch, tuple | list) else (batch,))
        if num_batches is not None and len(out) >= num_batches:
            break
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120]


class QuantAnalyzer:
    """Analyse a QuantSim: global and per-layer sensitivity, ranges, histograms, per-layer error.

    ``eval_fn(model) -> float`` (higher is better) scores ``sim.model``; without it the label-free
    ``metric`` ('cosine' | 'sqnr') against FP32 outputs is used. An uncalibrated sim is calibrated
    on ``calib_data`` first. ``per_quantizer=True`` adds a "disable only this quantizer" pass.
    """

    def __init__(
        self,
        sim: Any,
        calib_data: Any,
        eval_fn: EvalFn | None = None,
        eval_data: Any = None,
        *,
        metric: str = "cosine",
        batch_size: int = 32,
        num_batches: int | None = 4,
        per_quantizer: bool = False,
        max_histograms: int = 40,
    ) -> None:
        if not sim.quantizers():
            raise ConfigError(
                "the QuantSim has no quantizers (no quantizable layers were found): nothing to analyse"
            )
        self.sim = sim
        self.calib = as_batches(calib_data, batch_size, num_batches)
        if not self.calib:
            raise ConfigError("QuantAnalyzer needs at least one calibration batch")
        self.eval_batches = as_batches(eval_data, batch_size, num_batches) or self.calib
        self.metric_name = "eval_fn" if eval_fn is not None else f"{metric} vs FP32"
        self.eval_fn = (
            eval_fn if eval_fn is not None else OutputAgreement(sim.fp_model, self.eval_batches, metric)
        )
        self.per_quantizer = per_quantizer
        self.max_histograms = max_histograms

    def analyze(
        self,
        out_dir: str | Path,
        progress: Callable[[str, float], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> AnalysisResult:
        """Run every analysis, write the files into ``out_dir`` and return the numbers."""
        sim = self.sim

        def stage(name: str, fraction: float) -> None:
            if cancel is not None and cancel():
                raise CancelledError(f"analysis cancelled at stage {name!r}")
            if progress is not None:
                progress(name, fraction)

        if any(q.enabled and not q.is_calibrated for q in sim.quantizers().values()):
            stage("calibrate", 0.0)
            sim.compute_encodings(self.calib)
        stage("global", 0.05)
        global_metrics = global_sensitivity(sim, self.eval_fn)
        stage("per_layer", 0.15)
        per_layer = per_layer_sensitivity(sim, self.eval_fn)
        per_q: dict[str, float] = {}
        if self.per_quantizer:
            stage("per_quantizer", 0.5)
            per_q = per_quantizer_sensitivity(sim, self.eval_fn)
        stage("ranges", 0.75)
        stats = collect_activation_stats(sim, self.calib)
        w_ranges, a_ranges = weight_ranges(sim), activation_ranges(sim, stats)
        stage("layer_error", 0.8)
        errors = layer_output_error(sim, self.eval_batches)
        q_sqnr = quantizer_sqnr(sim, stats)
        groups = layer_groups(sim)
        ranking = rank_layers(groups, global_metrics, per_layer, q_sqnr, w_ranges, errors)
        result = AnalysisResult(
            self.metric_name, global_metrics, per_layer, per_q, w_ranges, a_ranges, errors, q_sqnr, ranking
        )
        stage("report", 0.85)
        hist_keys = [k for row in ranking for k in row["quantizers"]][: self.max_histograms]
        self._write(
            Path(out_dir),
            result,
            histogram_data(sim, hist_keys, stats),
            render_histograms(sim, hist_keys, stats),
        )
        stage("done", 1.0)
        return result

    def _write(self, out: Path, r: AnalysisResult, hist: dict[str, Any], hist_png: dict[str, bytes]) -> None:
        (out / "plots").mkdir(parents=True, exist_ok=True)
        images = {
            "global": plots.global_bars(r.global_metrics, r.metric_name),
            "per_layer_sensitivity": plots.sensitivity_bars(
                {row["layer"]: r.per_layer[row["layer"]] for row in r.ranking},
                r.global_metrics["fp32"],
                r.global_metrics["quantized"],
                r.metric_name,
            ),
            "weight_ranges": plots.range_bars(r.weight_ranges, "Weight ranges (FP32) and encodings"),
            "activation_ranges": plots.range_bars(
                r.activation_ranges, "Activation ranges (FP32) and encodings"
            ),
            "layer_error": plots.layer_error_bars(r.layer_error),
        }
        files: dict[str, str] = {}
        for name, png in images.items():
            (out / "plots" / f"{name}.png").write_bytes(png)
            files[f"plot:{name}"] = f"plots/{name}.png"
        for key, png in hist_png.items():
            (out / "plots" / f"hist_{_safe(key)}.png").write_bytes(png)
        payloads = {
            "sensitivity.json": {
                "metric": r.metric_name,
                "global": r.global_metrics,
                "per_layer": r.per_layer,
                "per_quantizer": r.per_quantizer,
            },
            "ranges.json": {"weights": r.weight_ranges, "activations": r.activation_ranges},
            "layer_error.json": {"per_layer_output": r.layer_error, "quantizer_sqnr_db": r.quantizer_sqnr},
            "ranking.json": r.ranking,
            "histograms.json": hist,
        }
        for name, payload in payloads.items():
            (out / name).write_text(json.dumps(payload, indent=1, allow_nan=True))
            files[name] = name
        files["report.html"] = "report.html"
        files["analysis.json"] = "analysis.json"
        r.files = files
        (out / "report.html").write_text(self._html(r, images, hist_png))
        (out / "analysis.json").write_text(json.dumps(asdict(r), indent=1, allow_nan=True))

    def _html(self, r: AnalysisResult, images: dict[str, bytes], hist_png: dict[str, bytes]) -> str:
        g = r.global_metrics
        summary = [
            {"configuration": k, r.metric_name: v, "drop vs FP32": g["fp32"] - v} for k, v in g.items()
        ]
        sections = [
            (
                "Summary",
                table(summary, ["configuration", r.metric_name, "drop vs FP32"])
                + image(images["global"], "global"),
            ),
            (
                "Layers to look at first",
                table(
                    r.ranking[:30],
                    [
                        "rank",
                        "layer",
                        "score",
                        "action",
                        "reason",
                        "gain_if_excluded",
                        "drop_alone",
                        "output_sqnr_db",
                    ],
                ),
            ),
            (
                "Per-layer sensitivity",
                image(images["per_layer_sensitivity"], "sensitivity")
                + table(
                    [{"layer": k, **v} for k, v in r.per_layer.items()],
                    ["layer", "only_this", "all_but_this"],
                ),
            ),
        ]
        if r.per_quantizer:
            rows = [{"quantizer": k, "gain if disabled": v} for k, v in r.costly_quantizers(30)]
            sections.append(("Quantizers that cost the most", table(rows, ["quantizer", "gain if disabled"])))
        sections += [
            (
                "Weight ranges",
                image(images["weight_ranges"], "weights")
                + table(
                    [{"quantizer": k, **v} for k, v in r.weight_ranges.items()],
                    [
                        "quantizer",
                        "min",
                        "max",
                        "channel_spread",
                        "encoding_min",
                        "encoding_max",
                        "granularity",
                        "bitwidth",
                    ],
                ),
            ),
            (
                "Activation ranges",
                image(images["activation_ranges"], "activations")
                + table(
                    [{"quantizer": k, **v} for k, v in r.activation_ranges.items()],
                    ["quantizer", "min", "max", "encoding_min", "encoding_max", "bitwidth"],
                ),
            ),
            (
                "Per-layer output error vs FP32",
                image(images["layer_error"], "layer error")
                + table([{"layer": k, **v} for k, v in r.layer_error.items()], ["layer", "mse", "sqnr_db"]),
            ),
            (
                "Histograms (ranked layers first) with encoding ranges",
                "".join(f'<div class="hist">{image(png, key)}</div>' for key, png in hist_png.items()),
            ),
        ]
        return render_report("lowbit quantization analysis", sections)
