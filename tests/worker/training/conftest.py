"""Worker tests run against the real stack (tests/fixtures/worker_stack.py) and real worker processes."""

from tests.worker.conftest import stack  # noqa: F401  (the session's stack, shared with tests/worker)
