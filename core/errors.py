"""Engine exceptions. The service maps them to HTTP status codes in one table; the CLI to exit codes.

Every message says what was wrong and what is accepted.
"""

from __future__ import annotations


class LowbitError(Exception):
    """Base of all engine errors."""

    exit_code = 1
    code = "engine_error"


class ConfigError(LowbitError, ValueError):
    """A configuration value (scheme, bitwidth, quantsim config JSON, ...) is invalid."""

    exit_code = 3
    code = "invalid_config"


class ConfigWarning(UserWarning):
    """A config holds something lowbit reads past (an AIMET key it does not know): named, then ignored."""


class ModelLoadError(LowbitError, ValueError):
    """A model file cannot be loaded (wrong format, pickled content, unsafe external data, ...)."""

    exit_code = 3
    code = "invalid_model"


class DataLoadError(LowbitError, ValueError):
    """A data file (.npz / .safetensors) cannot be loaded or does not match the model."""

    exit_code = 3
    code = "invalid_data"


class ValidationError(LowbitError):
    """The model validator found nodes that cannot be quantized; ``report`` holds the per-node findings."""

    exit_code = 3
    code = "model_not_quantizable"

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class UnsupportedOpError(LowbitError):
    """An operator has no conversion or no quantized counterpart."""

    exit_code = 3
    code = "unsupported_op"


class CancelledError(LowbitError):
    """The caller's cancellation check asked the engine to stop."""

    exit_code = 5
    code = "cancelled"


class GraphCaptureError(LowbitError):
    """The model cannot be traced into a graph (neither torch.export nor torch.fx succeeded)."""

    exit_code = 3
    code = "untraceable_model"
