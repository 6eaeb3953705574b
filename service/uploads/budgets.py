"""Hard budgets of the upload checks (service/uploads/checks.py), from settings.

Every bound is read from a file's headers before its bytes are read, then enforced again while the
bytes stream through (a header can lie), so a check never holds more than one chunk in memory.

>>> UploadBudgets().max_inflation_ratio
200
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GiB = 1 << 30


@dataclass(frozen=True)
class UploadBudgets:
    """``max_file_bytes``: the whole upload; ``max_member_bytes``: one zip member once inflated;
    ``max_inflation_ratio``: inflated / compressed size of a deflated member (real data deflates a few
    times, a zip bomb ~1000×); ``max_input_elements``: a model input's declared element count (example
    inputs are built from it); ``max_tensor_bytes``: one ONNX initializer or constant."""

    max_file_bytes: int = 20 * GiB
    max_member_bytes: int = 8 * GiB
    max_inflation_ratio: int = 200
    max_input_elements: int = 1 << 25
    max_tensor_bytes: int = 4 * GiB
    chunk_bytes: int = 1 << 20

    @classmethod
    def from_settings(cls, settings: Any) -> UploadBudgets:
        return cls(
            max_file_bytes=settings.max_upload_bytes,
            max_member_bytes=settings.upload_max_member_bytes,
            max_inflation_ratio=settings.upload_max_inflation_ratio,
            max_input_elements=settings.upload_max_input_elements,
            max_tensor_bytes=settings.upload_max_tensor_bytes,
        )
