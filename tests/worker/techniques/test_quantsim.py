"""The ``quantsim`` technique in process: quantized-input passes from the job spec change the
activation ranges (and only those) and do not cost accuracy on the digits example."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from service.schemas.jobs import JobSpec
from tests.worker.techniques.conftest import Progress
from worker.pipeline.context import JobContext
from worker.techniques.quantsim import run_quantsim


def _encodings(prepared: JobContext, **params: Any) -> dict[str, Any]:
    ctx = dataclasses.replace(prepared, spec={"technique": "quantsim", "params": params}, monitor=Progress())
    sim: Any = run_quantsim(ctx).sim
    return {name: q.encoding for name, q in sim.quantizers().items() if q.encoding is not None}


def test_quantized_input_passes_refine_activation_ranges_only(prepared: JobContext) -> None:
    plain = _encodings(prepared)
    refined = _encodings(prepared, quantized_input_passes=2)
    assert plain.keys() == refined.keys()
    moved = [n for n in plain if ".param." not in n and not bool((plain[n].scale == refined[n].scale).all())]
    assert moved, "two quantized-input passes left every activation range as it was"
    for name in (n for n in plain if ".param." in n):
        assert bool((plain[name].scale == refined[name].scale).all()), name


def test_job_spec_bounds_quantized_input_passes() -> None:
    ids = {"model_id": "0" * 26, "calib_dataset_id": "1" * 26, "technique": "quantsim"}
    assert JobSpec(**ids, params={"quantized_input_passes": 2}).params == {"quantized_input_passes": 2}
    with pytest.raises(ValidationError, match="less than or equal to 8"):
        JobSpec(**ids, params={"quantized_input_passes": 9})
