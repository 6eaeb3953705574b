"""Worker tests run against the real stack (tests/fixtures/worker_stack.py) and real worker processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.worker_stack import Stack, start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, digits_artifacts: object) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("worker-stack"), digits_artifacts)
