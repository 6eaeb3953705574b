"""The state one AutoQuant run shares between its stages, and how a candidate stage is run.

A *candidate* stage produces a quantized model (a QuantSim) that is scored against the target: BN fold,
CLE, SeqMSE, AdaRound, the per-channel fallback, mixed precision. ``run_candidate`` does for each of
them what is the same everywhere: cancellation check, progress, the stage's cache entry (load, or
compute + score + save), the deployed-model verdict, the stage record, and the best-so-far.

Cache keys chain: a stage's key hashes the key of the stage it starts from (its parent) with its own
settings, so changing e.g. AdaRound's iterations re-runs AdaRound and what follows, never BN fold or CLE.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from core.autoquant_cache import StageCache, stage_key
from core.errors import CancelledError
from core.ptq.adaround import AdaroundConfig
from core.ptq.calibration_batches import Batch
from core.ptq.seq_mse import SeqMseConfig

ProgressFn = Callable[[str, float], None]
CancelFn = Callable[[], bool]
EvalFn = Callable[[nn.Module], float]


@dataclass
class StageResult:
    name: str
    status: str  # "met" | "below" | "info" | "unreachable"
    score: float | None
    seconds: float
    cached: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SimRecipe:
    """What a candidate's QuantSim is built from: a float graph and the weight granularity."""

    graph: fx.GraphModule
    per_channel: bool | None


@dataclass
class Candidate:
    """A scored candidate stage: its sim, score, how to rebuild its sim, and its cache key."""

    name: str
    score: float
    sim: Any
    recipe: SimRecipe
    key: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunInputs:
    """What the user passed, before the prepare stage turns it into a graph, batches and a metric."""

    model: Any
    calib_data: Any
    eval_fn: EvalFn | None
    eval_data: Any
    num_calib_samples: int
    batch_size: int
    example_inputs: tuple[Any, ...] | None
    cache_dir: Any


@dataclass
class AutoQuantRun:
    """Settings of the run (set by autoquant()) and the state the stages build up."""

    # -- settings ----------------------------------------------------------------------------------
    inputs: RunInputs
    param_bw: int
    output_bw: int
    config: Any
    per_channel: bool | None
    per_channel_fallback: bool
    scheme_candidates: tuple[tuple[str, str], ...]
    adaround: AdaroundConfig
    seq_mse: SeqMseConfig | None
    mixed_precision: bool
    mixed_precision_bw: tuple[int, int]
    allowed_accuracy_drop: float
    progress: ProgressFn | None
    cancel: CancelFn | None
    deployed_score: Callable[[Any], float] | None
    # -- filled by the prepare stage ---------------------------------------------------------------
    batches: list[Batch] = field(default_factory=list)
    example: tuple[Any, ...] = ()
    # Sim attributes export reads: input_names, output_names, dynamic_dims (a LoadedModel's).
    io_names: dict[str, Any] = field(default_factory=dict)
    fp: fx.GraphModule | None = None
    eval_fn: EvalFn | None = None
    metric: str = ""
    fp_score: float = 0.0
    target: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    cache: StageCache = field(default_factory=lambda: StageCache(None))
    base_key: str = ""
    # -- built up by the stages --------------------------------------------------------------------
    schemes: tuple[str, str] = ("min_max", "min_max")
    reachable: bool = True
    w32_score: float | None = None
    stages: list[StageResult] = field(default_factory=list)
    graphs: dict[str, fx.GraphModule] = field(default_factory=dict)  # float graphs: "bn_fold", "cle"
    candidates: dict[str, Candidate] = field(default_factory=dict)
    best: Candidate | None = None
    met: bool = False

    # -- services for stages -----------------------------------------------------------------------
    def report(self, stage: str, fraction: float) -> None:
        if self.progress is not None:
            self.progress(stage, fraction)

    def check_cancel(self, stage: str) -> None:
        if self.cancel is not None and self.cancel():
            raise CancelledError(f"AutoQuant cancelled before stage {stage}")

    def score(self, model: nn.Module) -> float:
        assert self.eval_fn is not None
        return float(self.eval_fn(model))

    def make_sim(self, recipe: SimRecipe, schemes: tuple[str, str] | None = None) -> Any:
        from core.quantsim import QuantSim

        schemes = schemes or self.schemes
        sim = QuantSim(
            copy.deepcopy(recipe.graph),
            self.example,
            self.config,
            param_bw=self.param_bw,
            output_bw=self.output_bw,
            param_scheme=schemes[0],
            act_scheme=schemes[1],
            per_channel=recipe.per_channel,
            prepared=True,
        )
        for key, names in self.io_names.items():
            setattr(sim, key, names)
        return sim

    def calibrated(self, recipe: SimRecipe, schemes: tuple[str, str] | None = None) -> Any:
        sim = self.make_sim(recipe, schemes)
        sim.compute_encodings(self.batches, cancel=self.cancel)
        return sim

    def recipe(self, graph: str) -> SimRecipe:
        """The run's own granularity on one of the float graphs."""
        return SimRecipe(self.graphs[graph], self.per_channel)


def snapshot(sim: Any) -> dict[str, Any]:
    quantizers = sim.quantizers()
    return {
        "frozen": sorted(k for k, q in quantizers.items() if q.frozen),
        "bitwidths": {k: q.spec.bitwidth for k, q in quantizers.items()},
    }


def restore(sim: Any, snap: dict[str, Any], state: dict[str, torch.Tensor] | None) -> None:
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


ComputeFn = Callable[[], tuple[Any, dict[str, Any]]]


def run_candidate(
    run: AutoQuantRun,
    name: str,
    recipe: SimRecipe,
    parent_key: str,
    settings: dict[str, Any],
    compute: ComputeFn,
) -> Candidate:
    """Run (or load from the cache) one candidate stage and record it; sets ``run.met`` and ``run.best``.

    ``recipe`` rebuilds the stage's sim skeleton when its state comes from the cache; ``compute()``
    returns (calibrated sim, details) otherwise."""
    run.check_cancel(name)
    run.report(name, 0.0)
    t0 = time.perf_counter()
    key = stage_key(parent_key, name, settings)
    hit = run.cache.load(name, key)
    if hit is not None:
        meta, state = hit
        sim = run.make_sim(recipe)
        restore(sim, meta, state)
        score, details = float(meta["score"]), dict(meta["details"])
    else:
        sim, details = compute()
        score = run.score(sim.model)
        meta = {"score": score, "details": details, **snapshot(sim)}
        run.cache.save(name, key, meta, sim.model.state_dict())
    if run.deployed_score is not None:
        # The verdict goes by the model that ships; the simulation's score stays beside it.
        details = {**details, "sim_score": score}
        score = float(run.deployed_score(sim))
        details["deployed_score"] = score
    ok = score >= run.target
    run.stages.append(
        StageResult(name, "met" if ok else "below", score, time.perf_counter() - t0, hit is not None, details)
    )
    candidate = Candidate(name, score, sim, recipe, key, details)
    run.candidates[name] = candidate
    if run.best is None or score > run.best.score:
        run.best = candidate
    run.met = ok
    run.report(name, 1.0)
    return candidate


def cached_info(
    run: AutoQuantRun, name: str, settings: dict[str, Any], compute: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """An informational stage's result (JSON only) from the cache, or computed and stored."""
    key = stage_key(run.base_key, name, settings)
    hit = run.cache.load(name, key)
    if hit is not None:
        return hit[0], True
    meta = compute()
    run.cache.save(name, key, meta)
    return meta, False
