"""A failed job's ``error`` as the API returns it: ``{"code", "message", "type"}``, in the user's terms.

Tracebacks stay in the worker's log (``GET /v1/jobs`` returns ``error`` to every caller of the project).
Messages name what the user uploaded — "calibration dataset 01h…", "model version 01h…" — not the
worker's temporary copies (``/tmp/lowbit-job-…/inputs/calib.npz``).

>>> from pathlib import Path
>>> describe_paths("bad file '/tmp/j/inputs/calib.npz'", Path("/tmp/j"), {"calib_dataset_id": "d1"})
"bad file 'calibration dataset d1'"
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from worker.memory_limit import is_out_of_memory

# Exception class name -> error code; other classes get their name in snake case without "_error".
_CODES = {
    "ModelNotQuantizableError": "model_not_quantizable",
    "ModelLoadError": "invalid_model",
    "UnsupportedOpError": "unsupported_op",
    "DataLoadError": "invalid_data",
    "ConfigError": "invalid_config",
    "UploadRejectedError": "upload_rejected",
    "InputMissingError": "input_missing",
    "InfrastructureError": "infrastructure_unavailable",
    "SoftTimeLimitExceeded": "time_limit",
}
_ROLES = {"model": ("model", "model_id"), "calib": ("calibration dataset", "calib_dataset_id"),
          "eval": ("evaluation dataset", "eval_dataset_id")}  # fmt: skip


def error_code(exc: BaseException) -> str:
    if is_out_of_memory(exc):
        return "out_of_memory"
    name = type(exc).__name__
    return _CODES.get(name) or re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower().removesuffix("_error")


def describe_paths(message: str, workdir: Path, spec: dict[str, Any]) -> str:
    """``message`` with the job's input files named by what they are and other temp paths elided."""
    root = re.escape(str(workdir))

    def name(match: re.Match[str]) -> str:
        what, key = _ROLES[match.group(1)]
        return f"{what} {spec.get(key) or ''}".strip()

    message = re.sub(root + r"/inputs/(model|calib|eval)\.[A-Za-z0-9]+", name, message)
    return re.sub(root + r"[^\s'\"]*", "<job files>", message)


def job_error(exc: BaseException, workdir: Path, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The stored ``error`` of a job that failed with ``exc`` (no traceback)."""
    message = extra.pop("message", None) or str(exc)
    if is_out_of_memory(exc):
        message = f"the job ran out of its memory limit ({describe_paths(message, workdir, spec)[:300]})"
    return {"code": error_code(exc), "message": describe_paths(message, workdir, spec)[:4000],
            "type": type(exc).__name__, **extra}  # fmt: skip
