"""The Celery application, built from the service :class:`Settings` and :class:`WorkerSettings`.

JSON only; ``acks_late`` with ``task_reject_on_worker_lost`` so a task whose process dies is delivered
again; prefetch 1 so a long job never holds a second message hostage; soft/hard time limits below the
Redis visibility timeout; kombu's restore sweep tuned so a dead worker's task returns in seconds.
The embedded mode (no Redis) uses ``filesystem://`` with a control folder (revoke works) or
``sqla+sqlite://``. Nothing touches CUDA here: the GPU device is chosen inside the job (see
worker/device.py).

>>> app = create_celery(Settings(broker_url="redis://127.0.0.1:6379/0"), WorkerSettings())
>>> app.conf.task_acks_late, app.conf.worker_prefetch_multiplier
(True, 1)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Queue

from service.settings import Settings
from worker.settings import WorkerSettings

RUN_JOB = "lowbit.run_job"
SCHEDULE_TICK = "lowbit.schedule_tick"
RECONCILE = "lowbit.reconcile"
QUEUES = ("cpu", "gpu", "ops")  # ops: maintenance ticks, so a busy job queue never delays them


def broker_transport_options(settings: Settings, wsettings: WorkerSettings) -> dict[str, Any]:
    """Transport options for the broker URL of ``settings``."""
    url = settings.broker_url
    if url.startswith(("redis://", "rediss://", "sentinel://")):
        return {
            "visibility_timeout": wsettings.visibility_timeout_s,
            "unacked_restore_interval": wsettings.unacked_restore_interval_s,
            "unacked_restore_throttle": wsettings.unacked_restore_throttle_s,
        }
    if url.startswith("filesystem://"):
        root = Path(settings.broker_folder)
        folders = {name: root / name for name in ("queue", "processed", "control")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]),
            "store_processed": False,
            "control_folder": str(folders["control"]),
        }
    return {}


def create_celery(settings: Settings, wsettings: WorkerSettings | None = None) -> Celery:
    """A configured Celery app with lowbit's tasks registered (no connection is opened here)."""
    wsettings = wsettings or WorkerSettings()
    app = Celery("lowbit", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=wsettings.soft_time_limit_s,
        task_time_limit=wsettings.hard_time_limit_s,
        broker_transport_options=broker_transport_options(settings, wsettings),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="cpu",
        task_create_missing_queues=False,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        beat_schedule={
            # Expiring ticks: when no worker serves "ops" for a while, stale ticks are dropped, not piled up.
            "schedule-tick": {
                "task": SCHEDULE_TICK,
                "schedule": wsettings.schedule_tick_s,
                "options": {"queue": "ops", "expires": wsettings.schedule_tick_s},
            },
            "reconcile": {
                "task": RECONCILE,
                "schedule": wsettings.reconcile_interval_s,
                "options": {"queue": "ops", "expires": wsettings.reconcile_interval_s},
            },
        },
    )
    app.conf.lowbit_settings = settings
    app.conf.lowbit_worker_settings = wsettings
    from worker import tasks

    tasks.register(app)
    return app
