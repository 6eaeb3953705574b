"""Worker-side settings (``LOWBIT_*`` environment variables), next to the service's :class:`Settings`.

Time limits and the Redis visibility timeout are tied: a task that outlives the visibility timeout is
delivered again while it still runs (shared/NOTES.md), so the visibility timeout is always derived as
the hard limit plus a margin and cannot be set below it.

>>> WorkerSettings(soft_time_limit_s=60, hard_time_limit_s=100).visibility_timeout_s
160
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    """Every knob of the worker, the relay/reconciler and beat."""

    model_config = SettingsConfigDict(env_prefix="LOWBIT_", extra="ignore")

    soft_time_limit_s: int = Field(default=6 * 3600, gt=0)
    hard_time_limit_s: int = Field(default=6 * 3600 + 300, gt=0)
    visibility_margin_s: int = Field(default=60, ge=1)
    # kombu's sweep that returns unacked messages of dead workers (93 s -> 8.5 s measured in NOTES.md).
    unacked_restore_interval_s: float = Field(default=2.0, gt=0)
    unacked_restore_throttle_s: float = Field(default=1.0, ge=0)

    max_attempts: int = Field(default=3, ge=1, le=100)
    heartbeat_s: float = Field(default=2.0, gt=0)
    stale_after_s: float = Field(default=30.0, gt=0)
    queued_stale_s: float = Field(default=60.0, gt=0)
    cancel_grace_s: float = Field(default=30.0, gt=0)
    progress_every_s: float = Field(default=1.0, ge=0)

    # Retries of the worker's own infrastructure calls (database writes, object storage).
    db_retry_s: float = Field(default=120.0, ge=0)
    storage_retry_s: float = Field(default=30.0, ge=0)
    # A job's results are worth waiting for: their upload outlasts a longer storage outage.
    results_retry_s: float = Field(default=300.0, ge=0)
    retry_base_s: float = Field(default=0.25, gt=0)

    relay_interval_s: float = Field(default=0.5, gt=0)
    reconcile_interval_s: float = Field(default=5.0, gt=0)
    schedule_tick_s: float = Field(default=60.0, gt=0)
    webhook_attempts: int = Field(default=5, ge=1, le=20)
    webhook_timeout_s: float = Field(default=10.0, gt=0)

    queues: str = "cpu"  # comma-separated queues this worker consumes (gpu workers: "gpu")
    concurrency: int = Field(default=1, ge=1)
    # Address-space limit of each CPU pool process (worker/memory_limit.py): 0 = 80% of the host's
    # memory divided by the concurrency, -1 = none.
    job_memory_limit_bytes: int = Field(default=0, ge=-1)
    # Multi-node QAT (params.nodes > 1, compute gpu) as a Kubeflow Trainer TrainJob; see
    # worker/training/kubeflow.py and deploy/components/kubeflow/.
    kubeflow_enabled: bool = False
    kubeflow_namespace: str = "lowbit"
    kubeflow_image: str = ""
    kubeflow_runtime: str = "torch-distributed"
    kubeflow_env_configmap: str = "lowbit-config"
    kubeflow_env_secret: str = "lowbit-secrets"
    kubeflow_gpus_per_node: int = Field(default=1, ge=1, le=64)
    kubeflow_poll_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _hard_limit_after_soft(self) -> WorkerSettings:
        # Celery arms the hard limit only once the soft one has fired: a soft limit at or above the
        # hard one would make the hard limit the soft one's (measured: a 4 s hard limit with a 600 s
        # soft limit never killed the task).
        if self.hard_time_limit_s <= self.soft_time_limit_s:
            raise ValueError(
                f"LOWBIT_HARD_TIME_LIMIT_S ({self.hard_time_limit_s}) must be greater than "
                f"LOWBIT_SOFT_TIME_LIMIT_S ({self.soft_time_limit_s}): the soft limit lets a job fail "
                "cleanly, the hard one kills what ignored it"
            )
        return self

    @property
    def visibility_timeout_s(self) -> int:
        """Redis visibility timeout: above the hard limit, so a running task is never delivered twice."""
        return self.hard_time_limit_s + self.visibility_margin_s
