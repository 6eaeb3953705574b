"""AutoQuant's fallback stages, tried when no PTQ technique met the target at the requested precision.

=====  ===================  =========================================================================
 pos   stage                what it does
=====  ===================  =========================================================================
  80   per_channel          the run asked for per-tensor weights but its config allows per-channel
                            ones (``per_channel=False`` with a preset whose weights are per-channel):
                            the best recipe so far again with the config's per-channel weights —
                            nearest first, AdaRound when nearest misses the target. Same BitOps.
  90   mixed_precision      (optional) raise the bitwidth of the most sensitive modules, one at a
                            time, re-measuring after each and keeping only raises that do not lower
                            the score, until the target is met; the accepted steps are a Pareto curve
                            of score against relative BitOps (core/autoquant_amp.py).
=====  ===================  =========================================================================
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any

import torch

from core.autoquant_amp import greedy_mixed_precision, module_macs, relative_bitops
from core.autoquant_run import AutoQuantRun, SimRecipe, run_candidate
from core.autoquant_stages import CandidateStage, best_graph, register_stage
from core.ptq.adaround import apply_adaround
from core.ptq.seq_mse import apply_seq_mse


def _weight_granularities(sim: Any) -> dict[str, str]:
    return {k: q.spec.granularity for k, q in sim.param_quantizers().items() if k.endswith(".weight")}


@register_stage(80)
class PerChannel(CandidateStage):
    name = "per_channel"

    def applies(self, run: AutoQuantRun) -> bool:
        if not (super().applies(run) and run.per_channel_fallback and run.per_channel is False):
            return False
        # The config's own choice (per_channel=None) must put some weight per channel that the run has
        # per tensor; a target that only runs per-tensor weights gets no fallback it cannot deploy.
        graph = run.graphs[best_graph(run)]
        mine = _weight_granularities(run.make_sim(SimRecipe(graph, False)))
        allowed = _weight_granularities(run.make_sim(SimRecipe(graph, None)))
        return any(allowed[k] == "per_channel" and mine.get(k) != "per_channel" for k in allowed)

    def execute(self, run: AutoQuantRun) -> None:
        assert run.best is not None
        graph = best_graph(run)
        recipe = SimRecipe(run.graphs[graph], None)
        with_seq_mse = run.seq_mse is not None and (
            run.best.name == "seq_mse"
            or (run.best.name == "adaround" and run.best.details.get("applied_to") == "seq_mse")
        )
        seq_config, target = run.seq_mse, run.target

        def compute() -> tuple[Any, dict[str, Any]]:
            sim = run.make_sim(recipe)
            if with_seq_mse:
                assert seq_config is not None
                apply_seq_mse(sim, run.batches, seq_config, cancel=run.cancel)
            sim.compute_encodings(run.batches, cancel=run.cancel)
            nearest = run.score(sim.model)
            details: dict[str, Any] = {"graph": graph, "seq_mse": with_seq_mse, "nearest_score": nearest}
            if nearest < target:
                ada = apply_adaround(
                    sim,
                    run.batches,
                    run.adaround,
                    progress=lambda f: run.report(self.name, f),
                    cancel=run.cancel,
                )
                sim.compute_encodings(run.batches, cancel=run.cancel)
                details["adaround_seconds"] = ada.seconds
            details["adaround"] = nearest < target
            return sim, details

        settings = {
            "seq_mse": asdict(seq_config) if with_seq_mse and seq_config is not None else None,
            "adaround": asdict(run.adaround),
            "target": target,  # AdaRound runs only below it
        }
        run_candidate(run, self.name, recipe, run.candidates[graph].key, settings, compute)


def raise_module(sim: Any, name: str, param_bw: int, act_bw: int) -> bool:
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


def _sensitivity(run: AutoQuantRun, sim: Any) -> dict[str, float]:
    """Score gained by leaving each quantized module in float, the others as they are."""
    base = run.score(sim.model)
    gains: dict[str, float] = {}
    modules = sim.quantized_modules()
    for i, (name, module) in enumerate(modules.items()):
        run.check_cancel("mixed_precision")
        qs = [q for q in module.quantizers().values() if q.enabled]
        if not qs:
            continue
        for q in qs:
            q.enabled = False
        module.clear_param_cache()
        gains[name] = run.score(sim.model) - base
        for q in qs:
            q.enabled = True
        module.clear_param_cache()
        run.report("mixed_precision", 0.5 * (i + 1) / len(modules))
    return gains


@register_stage(90)
class MixedPrecision(CandidateStage):
    name = "mixed_precision"

    def applies(self, run: AutoQuantRun) -> bool:
        return super().applies(run) and run.mixed_precision

    def execute(self, run: AutoQuantRun) -> None:
        assert run.best is not None
        source = run.best
        bw = run.mixed_precision_bw

        def compute() -> tuple[Any, dict[str, Any]]:
            sim = copy.deepcopy(source.sim)
            gains = _sensitivity(run, sim)
            order = sorted(gains, key=lambda n: gains[n], reverse=True)
            macs = module_macs(sim, run.example)

            def measure(candidate: Any) -> float:
                candidate.compute_encodings(run.batches, cancel=run.cancel)
                return run.score(candidate.model)

            sim, _, details = greedy_mixed_precision(
                sim,
                order,
                measure,
                lambda s, name: raise_module(s, name, *bw),
                run.target,
                lambda s: relative_bitops(s, macs, run.output_bw, bw),
                lambda: run.check_cancel(self.name),
            )
            return sim, {"source": source.name, "sensitivity": gains, **details}

        settings = {"bitwidths": list(bw), "target": run.target}  # the search stops at the target
        run_candidate(run, self.name, source.recipe, source.key, settings, compute)
