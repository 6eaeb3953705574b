"""AutoQuant's mixed-precision search: a raise that lowers the re-measured score is not kept."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.autoquant_amp import greedy_mixed_precision


@dataclass
class _Sim:
    raised: list[str] = field(default_factory=list)


# Scores after raising a set of modules: raising "b" on top of "a" hurts (re-calibration moved a range).
_SCORES = {(): 0.5, ("a",): 0.7, ("a", "b"): 0.6, ("a", "c"): 0.8, ("a", "c", "d"): 0.95}
_COST = {"a": 0.3, "b": 0.1, "c": 0.2, "d": 0.2}


def _raise(sim: _Sim, name: str) -> bool:
    sim.raised.append(name)
    return True


def test_greedy_search_is_monotone_in_bitops_and_skips_raises_that_hurt():
    sim, score, details = greedy_mixed_precision(
        _Sim(),
        ["a", "b", "c", "d", "e"],
        lambda s: _SCORES[tuple(s.raised)],
        _raise,
        target=0.9,
        bitops=lambda s: 0.2 + sum(_COST[n] for n in s.raised),
    )
    assert details["raised"] == ["a", "c", "d"] and details["rejected"] == ["b"]
    assert sim.raised == ["a", "c", "d"] and score == 0.95  # stopped at the target: "e" never tried
    curve = [(p["relative_bitops"], p["score"]) for p in details["pareto"]]
    assert curve == sorted(curve) and [s for _, s in curve] == sorted(s for _, s in curve)
