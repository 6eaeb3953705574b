"""Which device a job runs on, decided inside the job's process (never in the worker's parent, so a
prefork parent never initializes CUDA). GPU workers are started one per GPU with
``CUDA_VISIBLE_DEVICES`` set, so "cuda" here is always that one device."""

from __future__ import annotations

import os


def job_device(compute: str) -> str:
    """ "cuda" for a gpu job when CUDA is usable in this process, else "cpu"."""
    if compute != "gpu" or os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_label(device: str) -> str:
    """What the job row records: "cpu" or "cuda:<name>"."""
    if device == "cuda":
        import torch

        return f"cuda:{torch.cuda.get_device_name(0)}"[:64]
    return "cpu"
