"""Shared by the technique tests: the digits job after the prepare stage, built once per module."""

from __future__ import annotations

from typing import Any

import pytest

from worker.pipeline.context import JobContext
from worker.pipeline.prepare import prepare_inputs
from worker.settings import WorkerSettings


class Progress:
    """The slice of JobMonitor the engine-side stages call (no job row: nothing here is persisted)."""

    def __init__(self) -> None:
        self.fractions: list[float] = []
        self.lines: list[str] = []

    def progress(self, fraction: float) -> None:
        self.fractions.append(fraction)

    def log(self, message: str, level: str = "info") -> None:
        self.lines.append(message)

    def cancelled(self) -> bool:
        return False


@pytest.fixture(scope="module")
def prepared(digits_artifacts: Any, tmp_path_factory: pytest.TempPathFactory) -> JobContext:
    """The digits job after the prepare stage (loaded, validated, prepared once for the module)."""
    ctx = JobContext("technique-test", {}, tmp_path_factory.mktemp("job"), None, Progress(), WorkerSettings())  # type: ignore[arg-type]
    ctx.model_path, ctx.calib_path, ctx.eval_path = (
        digits_artifacts.model_pt2,
        digits_artifacts.calib_data,
        digits_artifacts.eval_data,
    )
    prepare_inputs(ctx)
    return ctx
