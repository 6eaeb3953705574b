"""AutoQuant: try PTQ techniques in a sensible order and stop when the model meets the accuracy target.

Flow (each stage recorded with its score and time; target = FP32 score − allowed drop):

1. ``prepare``          capture the model (core.graph.prepare_model) and score FP32.
2. ``scheme_selection`` W/A range-scheme pairs (min-max / SQNR), best kept.
3. ``w32_check``        float weights, quantized activations: below target → stop early; only QAT or a
                        higher activation bitwidth can help.
4. ``bn_fold``          BN folding.                          }
5. ``cle``              cross-layer equalization (+ BN fold). } the first stage meeting the target
6. ``seq_mse``          weight ranges by output error (SeqMSE) } stops the run; otherwise the best
                        on the better of the two above.        } of them is returned.
7. ``adaround``         AdaRound on the best model so far.    }
8. ``mixed_precision``  (optional) raise the bitwidth of the most sensitive modules, one at a time,
                        re-measuring after each and keeping only raises that do not lower the score,
                        until the target is met; the accepted steps are a Pareto curve of score against
                        relative BitOps (core/autoquant_amp.py), plotted in the report.

``eval_fn(model) -> float`` is the user's metric (higher is better); without one, a label-free metric is
used: the mean cosine similarity of the outputs to the FP32 model's (1.0 = identical).
With ``cache_dir``, stage results (scores in JSON, quantized states in safetensors) are cached under a key
of model, data and settings, so a re-run after a crash resumes where it stopped.

>>> result = autoquant(model, calib, eval_fn=accuracy, allowed_accuracy_drop=0.01,
...                    param_bw=4, out_dir="out", cache_dir=".lowbit/aq")       # doctest: +SKIP
>>> result.best_stage, result.best_score, result.target_met                      # doctest: +SKIP
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from core.autoquant_amp import greedy_mixed_precision, module_macs, relative_bitops
from core.autoquant_cache import StageCache, fingerprint
from core.autoquant_report import write_reports
from core.errors import CancelledError, ConfigError
from core.ptq.adaround import AdaroundConfig, apply_adaround
from core.ptq.bn_fold import fold_all_batch_norms
from core.ptq.calibration_batches import Batch, materialize_batches
from core.ptq.cle import equalize_model
from core.ptq.seq_mse import SeqMseConfig, apply_seq_mse

ProgressFn = Callable[[str, float], None]
CancelFn = Callable[[], bool]
EvalFn = Callable[[nn.Module], float]
DEFAULT_SCHEME_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("min_max", "min_max"),
    ("sqnr", "min_max"),
    ("min_max", "sqnr"),
    ("sqnr", "sqnr"),
)
CANDIDATE_STAGES = ("bn_fold", "cle", "seq_mse", "adaround", "mixed_precision")


@dataclass
class StageResult:
    name: str
    status: str  # "met" | "below" | "info" | "unreachable"
    score: float | None
    seconds: float
    cached: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class AutoQuantResult:
    """Outcome of a run. ``sim`` is the QuantSim of ``best_stage`` (None when the target is unreachable)."""

    fp32_score: float
    target: float
    allowed_accuracy_drop: float
    metric: str
    stages: list[StageResult]
    best_stage: str | None
    best_score: float | None
    target_met: bool
    reachable: bool
    message: str
    settings: dict[str, Any]
    seconds: float = 0.0
    sim: Any = None
    report_json: Path | None = None
    report_html: Path | None = None
    export: Any = None

    def to_report(self) -> dict[str, Any]:
        fields = {
            k: v for k, v in asdict(self).items() if k not in ("sim", "export", "report_json", "report_html")
        }
        return fields


def label_free_metric(fp_model: nn.Module, batches: list[Batch]) -> EvalFn:
    """Mean per-sample cosine similarity of a model's outputs to ``fp_model``'s on ``batches``."""
    with torch.no_grad():
        references = [fp_model(*b) for b in batches]

    def score(model: nn.Module) -> float:
        total, count = 0.0, 0
        with torch.no_grad():
            for b, ref in zip(batches, references, strict=True):
                out = model(*b)
                cos = nn.functional.cosine_similarity(
                    out.reshape(len(out), -1), ref.reshape(len(ref), -1), dim=1
                )
                total += float(cos.sum())
                count += len(cos)
        return total / max(count, 1)

    return score


def _snapshot(sim: Any) -> dict[str, Any]:
    quantizers = sim.quantizers()
    return {
        "frozen": sorted(k for k, q in quantizers.items() if q.frozen),
        "bitwidths": {k: q.spec.bitwidth for k, q in quantizers.items()},
    }


def _restore(sim: Any, snap: dict[str, Any], state: dict[str, torch.Tensor] | None) -> None:
    quantizers = sim.quantizers()
    for key, bw in snap.get("bitwidths", {}).items():
        if key in quantizers and quantizers[key].spec.bitwidth != bw:
            quantizers[key].set_spec(bitwidth=bw)
    if state is not None:
        sim.model.load_state_dict(state, strict=False)
    for key in snap.get("frozen", []):
        quantizers[key].freeze()
    for m in sim.quantized_modules().values():
        m.clear_param_cache()


def _raise_module(sim: Any, name: str, param_bw: int, act_bw: int) -> bool:
    """Raise one module's quantizers to (param_bw, act_bw); AdaRounded weights go back to FP32 first."""
    module = sim.quantized_modules()[name]
    changed = False
    for role, q in module.quantizers().items():
        target = param_bw if role.startswith("param.") else act_bw
        if not q.enabled or q.spec.dtype != "int" or q.spec.bitwidth >= target:
            continue
        if role.startswith("param."):
            pname = role.split(".", 1)[1]
            with torch.no_grad():
                module._parameters[pname].data.copy_(sim.fp_model.get_submodule(name)._parameters[pname])
            q.unfreeze()
        elif q.frozen:
            continue  # fixed-range outputs (Softmax, ...) keep their constraint
        q.set_spec(bitwidth=target)
        changed = True
    module.clear_param_cache()
    return changed


def autoquant(
    model: nn.Module | Any,
    calib_data: Any,
    eval_fn: EvalFn | None = None,
    allowed_accuracy_drop: float = 0.01,
    *,
    param_bw: int = 8,
    output_bw: int = 8,
    config: Any = None,
    per_channel: bool | None = None,
    scheme_candidates: tuple[tuple[str, str], ...] | None = None,
    adaround: AdaroundConfig | None = None,
    seq_mse: SeqMseConfig | None = SeqMseConfig(),
    mixed_precision: bool = True,
    mixed_precision_bw: tuple[int, int] = (8, 16),
    eval_data: Any = None,
    num_calib_samples: int = 2000,
    batch_size: int = 32,
    example_inputs: tuple[Any, ...] | None = None,
    out_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    export: bool = True,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    deployed_score: Callable[[Any], float] | None = None,
) -> AutoQuantResult:
    """Run AutoQuant (see the module docstring). ``mixed_precision_bw`` = (param, activation) bitwidths
    that sensitive modules are raised to. Writes reports and the exported model into ``out_dir`` when
    given. Raises CancelledError when ``cancel()`` returns True (checked between stages and in AdaRound).

    ``deployed_score(sim) -> float`` scores what ships (e.g. the exported QDQ model in ONNX Runtime,
    core.deployed_score); when given, each stage meets the target only if the deployed model does,
    and the sim's own score stays beside it in the stage's details."""
    from core.graph import prepare_model
    from core.quantsim import QuantSim

    if allowed_accuracy_drop < 0:
        raise ConfigError(f"allowed_accuracy_drop must be >= 0, got {allowed_accuracy_drop}")
    start = time.perf_counter()
    adaround = adaround or AdaroundConfig()
    candidates = scheme_candidates or DEFAULT_SCHEME_CANDIDATES

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, fraction)

    def check_cancel(stage: str) -> None:
        if cancel is not None and cancel():
            raise CancelledError(f"AutoQuant cancelled before stage {stage}")

    report("prepare", 0.0)
    batches = materialize_batches(calib_data, num_calib_samples, batch_size)
    io_names: dict[str, list[str]] = {}
    if hasattr(model, "graph_source") and hasattr(model, "example_inputs"):
        # A core.io.LoadedModel: capture its program/module, keep its I/O names for export.
        loaded: Any = model
        example_inputs = example_inputs or tuple(loaded.example_inputs)
        io_names = {"input_names": list(loaded.input_names), "output_names": list(loaded.output_names)}
        model = loaded.graph_source
    example = example_inputs or tuple(t[:1] if isinstance(t, torch.Tensor) else t for t in batches[0])
    fp: fx.GraphModule = prepare_model(model, example).eval()
    metric = "user eval_fn"
    if eval_fn is None:
        metric = "label-free: mean cosine similarity to FP32 outputs"
        eval_batches = materialize_batches(eval_data, None, batch_size) if eval_data is not None else batches
        eval_fn = label_free_metric(fp, eval_batches)
    t0 = time.perf_counter()
    fp_score = float(eval_fn(fp))
    target = fp_score - allowed_accuracy_drop
    settings: dict[str, Any] = {
        "param_bw": param_bw,
        "output_bw": output_bw,
        "per_channel": per_channel,
        "config": config if isinstance(config, str | type(None)) else "custom",
        "scheme_candidates": [list(c) for c in candidates],
        "adaround": asdict(adaround),
        "seq_mse": asdict(seq_mse) if seq_mse is not None else None,
        "mixed_precision": mixed_precision,
        "mixed_precision_bw": list(mixed_precision_bw),
        "metric": metric,
        "allowed_accuracy_drop": allowed_accuracy_drop,
    }
    cache = StageCache(cache_dir, fingerprint(fp, batches, settings))
    stages = [
        StageResult("prepare", "info", fp_score, time.perf_counter() - t0, details={"fp32_score": fp_score})
    ]
    report("prepare", 1.0)

    def make_sim(gm: fx.GraphModule, schemes: tuple[str, str]) -> Any:
        sim = QuantSim(
            copy.deepcopy(gm),
            example,
            config,
            param_bw=param_bw,
            output_bw=output_bw,
            param_scheme=schemes[0],
            act_scheme=schemes[1],
            per_channel=per_channel,
            prepared=True,
        )
        for key, names in io_names.items():
            setattr(sim, key, names)
        return sim

    def calibrated(gm: fx.GraphModule, schemes: tuple[str, str]) -> Any:
        sim = make_sim(gm, schemes)
        sim.compute_encodings(batches, cancel=cancel)
        return sim

    # -- scheme selection ---------------------------------------------------------------------------
    check_cancel("scheme_selection")
    hit = cache.load("scheme_selection")
    t0 = time.perf_counter()
    if hit is not None:
        scores = {tuple(k.split("/")): v for k, v in hit[0]["scores"].items()}
    else:
        scores = {}
        for i, pair in enumerate(candidates):
            check_cancel("scheme_selection")
            scores[pair] = float(eval_fn(calibrated(fp, pair).model))
            report("scheme_selection", (i + 1) / len(candidates))
        cache.save("scheme_selection", {"scores": {"/".join(k): v for k, v in scores.items()}})
    schemes: tuple[str, str] = max(scores, key=lambda k: scores[k])  # type: ignore[assignment]
    stages.append(
        StageResult(
            "scheme_selection",
            "info",
            scores[schemes],
            time.perf_counter() - t0,
            cached=hit is not None,
            details={"chosen": list(schemes), "scores": {"/".join(k): v for k, v in scores.items()}},
        )
    )
    settings["chosen_schemes"] = list(schemes)

    # -- reachability with float weights ------------------------------------------------------------
    check_cancel("w32_check")
    hit = cache.load("w32_check")
    t0 = time.perf_counter()
    if hit is not None:
        w32 = float(hit[0]["score"])
    else:
        sim = make_sim(fp, schemes)
        sim.set_enabled(False, kind="param")
        sim.compute_encodings(batches, cancel=cancel)
        w32 = float(eval_fn(sim.model))
        cache.save("w32_check", {"score": w32})
    reachable = w32 >= target
    stages.append(
        StageResult(
            "w32_check", "met" if reachable else "unreachable", w32, time.perf_counter() - t0, hit is not None
        )
    )
    report("w32_check", 1.0)

    best: tuple[str, float, Any] | None = None
    met = False
    models: dict[str, fx.GraphModule] = {}
    if reachable:

        def stage(
            name: str, parent: fx.GraphModule, compute: Callable[[], tuple[Any, dict[str, Any]]]
        ) -> None:
            nonlocal best, met
            check_cancel(name)
            report(name, 0.0)
            t0 = time.perf_counter()
            hit = cache.load(name)
            if hit is not None:
                meta, state = hit
                sim = make_sim(parent, schemes)
                _restore(sim, meta, state)
                score, details = float(meta["score"]), dict(meta["details"])
            else:
                sim, details = compute()
                score = float(eval_fn(sim.model))
                meta = {"score": score, "details": details, **_snapshot(sim)}
                cache.save(name, meta, sim.model.state_dict())
            if deployed_score is not None:
                # The verdict goes by the model that ships; the simulation's score stays beside it.
                details = {**details, "sim_score": score}
                score = float(deployed_score(sim))
                details["deployed_score"] = score
            ok = score >= target
            stages.append(
                StageResult(
                    name, "met" if ok else "below", score, time.perf_counter() - t0, hit is not None, details
                )
            )
            if best is None or score > best[1]:
                best = (name, score, sim)
            met = ok
            report(name, 1.0)

        folded = copy.deepcopy(fp)
        fold = fold_all_batch_norms(folded)
        models["bn_fold"] = folded
        stage(
            "bn_fold",
            folded,
            lambda: (calibrated(folded, schemes), {"folded": len(fold.folded) + len(fold.folded_forward)}),
        )
        if not met:
            equalized = copy.deepcopy(fp)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cle = equalize_model(equalized)
            models["cle"] = equalized
            cle_details = {
                "cls_sets": len(cle.cls_sets),
                "high_bias_absorbed": len(cle.high_bias_absorbed),
                "relu6_replaced": cle.relu6_replaced,
                "clips_scaled": cle.clips_scaled,
                "warnings": [str(w.message) for w in caught],
            }
            stage("cle", equalized, lambda: (calibrated(equalized, schemes), cle_details))
        if not met and seq_mse is not None:
            assert best is not None
            seq_parent_name = "cle" if best[0] == "cle" else "bn_fold"
            seq_parent = models[seq_parent_name]
            seq_config = seq_mse

            def run_seq_mse() -> tuple[Any, dict[str, Any]]:
                sim = make_sim(seq_parent, schemes)
                seq = apply_seq_mse(sim, batches, seq_config, cancel=cancel)
                sim.compute_encodings(batches, cancel=cancel)
                layers = [asdict(r) for r in seq.layers]
                return sim, {"applied_to": seq_parent_name, "seconds": seq.seconds, "layers": layers}

            models["seq_mse"] = seq_parent
            stage("seq_mse", seq_parent, run_seq_mse)
        if not met:
            assert best is not None
            # AdaRound rounds on the weight ranges of the best stage so far (SeqMSE's when it led).
            parent_name = best[0] if best[0] in ("cle", "seq_mse") else "bn_fold"
            parent = models[parent_name]
            seq_first = parent_name == "seq_mse"

            def run_adaround() -> tuple[Any, dict[str, Any]]:
                sim = make_sim(parent, schemes)
                if seq_first:
                    apply_seq_mse(sim, batches, seq_mse, cancel=cancel)
                ada = apply_adaround(
                    sim, batches, adaround, progress=lambda f: report("adaround", f), cancel=cancel
                )
                sim.compute_encodings(batches, cancel=cancel)
                layers = [asdict(r) for r in ada.layers]
                return sim, {"applied_to": parent_name, "seconds": ada.seconds, "layers": layers}

            models["adaround"] = parent
            stage("adaround", parent, run_adaround)
        if not met and mixed_precision:
            assert best is not None
            source_name, _, source_sim = best

            def run_mixed() -> tuple[Any, dict[str, Any]]:
                sim = copy.deepcopy(source_sim)
                base = float(eval_fn(sim.model))
                gains: dict[str, float] = {}
                modules = sim.quantized_modules()
                for i, (name, module) in enumerate(modules.items()):
                    check_cancel("mixed_precision")
                    qs = [q for q in module.quantizers().values() if q.enabled]
                    if not qs:
                        continue
                    for q in qs:
                        q.enabled = False
                    module.clear_param_cache()
                    gains[name] = float(eval_fn(sim.model)) - base
                    for q in qs:
                        q.enabled = True
                    module.clear_param_cache()
                    report("mixed_precision", 0.5 * (i + 1) / len(modules))
                order = sorted(gains, key=lambda n: gains[n], reverse=True)
                macs = module_macs(sim, example)

                def measure(candidate: Any) -> float:
                    candidate.compute_encodings(batches, cancel=cancel)
                    return float(eval_fn(candidate.model))

                sim, _, details = greedy_mixed_precision(
                    sim,
                    order,
                    measure,
                    lambda s, name: _raise_module(s, name, *mixed_precision_bw),
                    target,
                    lambda s: relative_bitops(s, macs, output_bw, mixed_precision_bw),
                    lambda: check_cancel("mixed_precision"),
                )
                return sim, {"source": source_name, "sensitivity": gains, **details}

            stage("mixed_precision", models.get(source_name, models["bn_fold"]), run_mixed)

    seconds = time.perf_counter() - start
    best_stage, best_score, best_sim = best if best is not None else (None, None, None)
    if not reachable:
        message = (
            f"target {target:.4f} is unreachable even with float weights (W32A{output_bw} scored {w32:.4f}): "
            "quantization-aware training or a higher activation bitwidth is needed"
        )
    elif met:
        message = f"target met at stage {best_stage} ({best_score:.4f} >= {target:.4f})"
    else:
        message = f"target {target:.4f} not met; closest: stage {best_stage} with {best_score:.4f}"
    result = AutoQuantResult(
        fp32_score=fp_score,
        target=target,
        allowed_accuracy_drop=allowed_accuracy_drop,
        metric=metric,
        stages=stages,
        best_stage=best_stage,
        best_score=best_score,
        target_met=met,
        reachable=reachable,
        message=message,
        settings=settings,
        seconds=seconds,
        sim=best_sim,
    )
    if out_dir is not None:
        if export and best_sim is not None:
            result.export = best_sim.export(out_dir, prefix="model")
        result.report_json, result.report_html = write_reports(out_dir, result.to_report())
    return result
