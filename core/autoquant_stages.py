"""AutoQuant's stages as small objects, registered in the order they run.

A stage registers itself with ``@register_stage(position)``; ``pipeline()`` lists them by position, and
core.autoquant runs each whose ``applies(run)`` is true. Positions leave gaps so a new technique slots
in between without editing the others (core/autoquant_fallbacks.py adds per-channel and mixed precision).

=====  ===================  =========================================================================
 pos   stage                what it does
=====  ===================  =========================================================================
  10   prepare              capture the model (core.graph.prepare_model), score FP32, set the target
  20   scheme_selection     W/A range-scheme pairs (min-max / SQNR), best kept
  30   w32_check            float weights, quantized activations: below target → stop (QAT needed)
  40   bn_fold              BN folding                                  } candidates: the first to meet
  50   cle                  cross-layer equalization (+ BN fold)        } the target stops the run,
  60   seq_mse              weight ranges by output error (SeqMSE)      } else the best is returned
  70   adaround             AdaRound on the best model so far           }
=====  ===================  =========================================================================
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, ClassVar

from core.autoquant_cache import StageCache, fingerprint, stage_key
from core.autoquant_prepare import prepare_run
from core.autoquant_run import AutoQuantRun, SimRecipe, StageResult, cached_info, run_candidate
from core.ptq.adaround import apply_adaround
from core.ptq.bn_fold import fold_all_batch_norms
from core.ptq.cle import equalize_model
from core.ptq.seq_mse import apply_seq_mse


class Stage:
    """One step of AutoQuant. ``applies`` decides whether it runs given what ran before."""

    name: ClassVar[str]
    position: ClassVar[int]

    def applies(self, run: AutoQuantRun) -> bool:
        return True

    def execute(self, run: AutoQuantRun) -> None:
        raise NotImplementedError


class CandidateStage(Stage):
    """A stage producing a scored QuantSim; runs while the target is reachable and not yet met."""

    def applies(self, run: AutoQuantRun) -> bool:
        return run.reachable and not run.met


_STAGES: list[Stage] = []


def register_stage(position: int) -> Callable[[type[Stage]], type[Stage]]:
    def deco(cls: type[Stage]) -> type[Stage]:
        cls.position = position
        _STAGES.append(cls())
        _STAGES.sort(key=lambda s: s.position)
        return cls

    return deco


def pipeline() -> list[Stage]:
    return list(_STAGES)


@register_stage(10)
class Prepare(Stage):
    name = "prepare"

    def execute(self, run: AutoQuantRun) -> None:
        run.report(self.name, 0.0)
        t0 = time.perf_counter()
        prepare_run(run)
        run.cache = StageCache(run.inputs.cache_dir)
        assert run.fp is not None
        # Run-wide settings only: each stage's own settings go into its own key (core/autoquant_run.py).
        run_wide = {k: run.settings[k] for k in ("param_bw", "output_bw", "per_channel", "metric")}
        run_wide["config"] = run.config if isinstance(run.config, str | type(None)) else repr(run.config)
        run.base_key = fingerprint(run.fp, run.batches, run_wide)
        run.stages.append(
            StageResult(
                self.name,
                "info",
                run.fp_score,
                time.perf_counter() - t0,
                details={"fp32_score": run.fp_score},
            )
        )
        run.report(self.name, 1.0)


@register_stage(20)
class SchemeSelection(Stage):
    name = "scheme_selection"

    def execute(self, run: AutoQuantRun) -> None:
        run.check_cancel(self.name)
        t0 = time.perf_counter()
        assert run.fp is not None
        float_graph = SimRecipe(run.fp, run.per_channel)

        def compute() -> dict[str, Any]:
            scores = {}
            for i, pair in enumerate(run.scheme_candidates):
                run.check_cancel(self.name)
                scores["/".join(pair)] = run.score(run.calibrated(float_graph, pair).model)
                run.report(self.name, (i + 1) / len(run.scheme_candidates))
            return {"scores": scores}

        meta, cached = cached_info(run, self.name, {"candidates": run.scheme_candidates}, compute)
        scores: dict[str, float] = meta["scores"]
        best = max(scores, key=lambda k: scores[k])
        run.schemes = tuple(best.split("/"))  # type: ignore[assignment]
        run.settings["chosen_schemes"] = list(run.schemes)
        run.stages.append(
            StageResult(
                self.name,
                "info",
                scores[best],
                time.perf_counter() - t0,
                cached,
                {"chosen": list(run.schemes), "scores": scores},
            )
        )


@register_stage(30)
class W32Check(Stage):
    """Float weights, quantized activations: if that misses the target, no weight technique can help."""

    name = "w32_check"

    def execute(self, run: AutoQuantRun) -> None:
        run.check_cancel(self.name)
        t0 = time.perf_counter()
        assert run.fp is not None
        float_graph = SimRecipe(run.fp, run.per_channel)

        def compute() -> dict[str, Any]:
            sim = run.make_sim(float_graph)
            sim.set_enabled(False, kind="param")
            sim.compute_encodings(run.batches, cancel=run.cancel)
            return {"score": run.score(sim.model)}

        meta, cached = cached_info(run, self.name, {"schemes": run.schemes}, compute)
        run.w32_score = float(meta["score"])
        run.reachable = run.w32_score >= run.target
        status = "met" if run.reachable else "unreachable"
        run.stages.append(StageResult(self.name, status, run.w32_score, time.perf_counter() - t0, cached))
        run.report(self.name, 1.0)


def _scheme_key(run: AutoQuantRun) -> str:
    """The key candidates on the float graphs start from: model, data, settings and chosen schemes."""
    return stage_key(run.base_key, "schemes", {"schemes": run.schemes})


@register_stage(40)
class BnFold(CandidateStage):
    name = "bn_fold"

    def execute(self, run: AutoQuantRun) -> None:
        assert run.fp is not None
        folded = copy.deepcopy(run.fp)
        fold = fold_all_batch_norms(folded)
        run.graphs[self.name] = folded
        recipe = run.recipe(self.name)
        details = {"folded": len(fold.folded) + len(fold.folded_forward)}
        run_candidate(run, self.name, recipe, _scheme_key(run), {}, lambda: (run.calibrated(recipe), details))


@register_stage(50)
class Cle(CandidateStage):
    name = "cle"

    def execute(self, run: AutoQuantRun) -> None:
        assert run.fp is not None
        equalized = copy.deepcopy(run.fp)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cle = equalize_model(equalized)
        run.graphs[self.name] = equalized
        recipe = run.recipe(self.name)
        details = {
            "cls_sets": len(cle.cls_sets),
            "high_bias_absorbed": len(cle.high_bias_absorbed),
            "relu6_replaced": cle.relu6_replaced,
            "clips_scaled": cle.clips_scaled,
            "warnings": [str(w.message) for w in caught],
        }
        run_candidate(run, self.name, recipe, _scheme_key(run), {}, lambda: (run.calibrated(recipe), details))


def best_graph(run: AutoQuantRun) -> str:
    """The float graph ("cle" or "bn_fold") of the best candidate so far."""
    best = run.best
    if best is not None and best.recipe.graph is run.graphs.get("cle"):
        return "cle"
    return "bn_fold"


@register_stage(60)
class SeqMse(CandidateStage):
    name = "seq_mse"

    def applies(self, run: AutoQuantRun) -> bool:
        return super().applies(run) and run.seq_mse is not None

    def execute(self, run: AutoQuantRun) -> None:
        assert run.seq_mse is not None
        config = run.seq_mse
        parent = best_graph(run)
        recipe = run.recipe(parent)

        def compute() -> tuple[Any, dict[str, Any]]:
            sim = run.make_sim(recipe)
            seq = apply_seq_mse(sim, run.batches, config, cancel=run.cancel)
            sim.compute_encodings(run.batches, cancel=run.cancel)
            layers = [asdict(r) for r in seq.layers]
            return sim, {"applied_to": parent, "seconds": seq.seconds, "layers": layers}

        run_candidate(run, self.name, recipe, run.candidates[parent].key, asdict(config), compute)


@register_stage(70)
class Adaround(CandidateStage):
    """AdaRound on the best candidate so far; on SeqMSE's weight ranges when SeqMSE led."""

    name = "adaround"

    def execute(self, run: AutoQuantRun) -> None:
        assert run.best is not None
        parent = run.best.name if run.best.name in ("cle", "seq_mse") else "bn_fold"
        source = run.candidates[parent]
        seq_first = parent == "seq_mse"
        seq_config = run.seq_mse

        def compute() -> tuple[Any, dict[str, Any]]:
            sim = run.make_sim(source.recipe)
            if seq_first:
                assert seq_config is not None
                apply_seq_mse(sim, run.batches, seq_config, cancel=run.cancel)
            ada = apply_adaround(
                sim, run.batches, run.adaround, progress=lambda f: run.report(self.name, f), cancel=run.cancel
            )
            sim.compute_encodings(run.batches, cancel=run.cancel)
            layers = [asdict(r) for r in ada.layers]
            return sim, {"applied_to": parent, "seconds": ada.seconds, "layers": layers}

        run_candidate(run, self.name, source.recipe, source.key, asdict(run.adaround), compute)
