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
from worker import memory_limit
from worker.settings import WorkerSettings

RUN_JOB = "lowbit.run_job"
SCHEDULE_TICK = "lowbit.schedule_tick"
RECONCILE = "lowbit.reconcile"  # the reconciler as a task, for operators: `celery call lowbit.reconcile`
# "ops" is declared for maintenance calls (`celery call lowbit.reconcile -Q ops`) and for workers
# started with `-Q cpu,ops`. Scheduled ticks use no queue: beat runs them in its own process, so a job
# backlog (every worker busy) can neither delay nor drop them.
QUEUES = ("cpu", "gpu", "ops")


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


def _events_supported(broker_url: str) -> bool:
    return broker_url.split("://", 1)[0] in ("redis", "rediss", "amqp", "amqps", "pyamqp")


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
        # Task events (sent, started, succeeded, ...) so Flower and `celery events` work against lowbit's
        # broker as is. Redis/AMQP only: they go out on a fanout (Redis pub/sub; nothing piles up when
        # no monitor listens); the embedded filesystem broker has no use for them.
        worker_send_task_events=_events_supported(settings.broker_url),
        task_send_sent_event=_events_supported(settings.broker_url),
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # Schedule ticks run in beat's own process (_relay_in_beat), never through the job queues.
        beat_schedule={},
    )
    app.conf.lowbit_settings = settings
    app.conf.lowbit_worker_settings = wsettings
    from worker import tasks

    tasks.register(app)
    memory_limit.install(
        wsettings.job_memory_limit_bytes, concurrency=wsettings.concurrency, queues=wsettings.queues
    )
    _relay_in_beat(app)
    _log_format(settings.log_format)
    _liveness(app)
    return app


def _liveness(app: Celery) -> None:
    """Worker and beat main processes touch the liveness file (worker/liveness.py): their health check
    does not go through the broker."""
    from celery.signals import beat_init, worker_ready

    from worker.liveness import start_heartbeat

    def start(sender: Any = None, **_: Any) -> None:
        owner = getattr(sender, "app", None)
        if owner is not None and id(owner) != id(app):
            return
        start_heartbeat()

    worker_ready.connect(start, weak=False)
    beat_init.connect(start, weak=False)


def _log_format(fmt: str) -> None:
    """Celery's worker and beat logging in lowbit's format (LOWBIT_LOG_FORMAT), with the request and
    job ids of the job being run on each line (service/log_format.py)."""
    from celery.signals import after_setup_logger, after_setup_task_logger

    from service.log_format import install

    def setup(logger: Any = None, **_: Any) -> None:
        for handler in getattr(logger, "handlers", []):
            install(handler, fmt)

    after_setup_logger.connect(setup, weak=False)
    after_setup_task_logger.connect(setup, weak=False)


def _relay_in_beat(app: Celery) -> None:
    """Beat runs the outbox relay and the reconciler (worker/relay.py) and the schedule tick
    (worker/schedules/tick.py) in threads of its own process, so a deployment of api + workers + beat
    needs no extra process and no tick waits behind jobs; two beats are safe (outbox rows are locked
    SKIP LOCKED, a run is unique per schedule and fire time). ``lowbit relay`` runs the relay alone."""
    from celery.signals import beat_init

    def start(sender: Any = None, **_: Any) -> None:
        if id(getattr(sender, "app", None)) != id(app):  # beat_init is global: only our app
            return
        import threading

        from worker.relay import run_loop
        from worker.schedules.tick import run_ticks
        from worker.tasks import resources

        wsettings = app.conf.lowbit_worker_settings
        db, _store = resources(app.conf.lowbit_settings, wsettings)
        threading.Thread(target=run_loop, args=(db, app), name="lowbit-relay", daemon=True).start()
        ticks = (db, wsettings.schedule_tick_s, threading.Event())
        threading.Thread(target=run_ticks, args=ticks, name="lowbit-schedule-tick", daemon=True).start()

    beat_init.connect(start, weak=False)


_DEFAULT: list[Celery] = []


def __getattr__(name: str) -> Celery:
    """``celery -A worker.app worker|beat``: the app from the environment's settings, built on first use."""
    if name not in ("app", "celery"):
        raise AttributeError(name)
    if not _DEFAULT:
        _DEFAULT.append(create_celery(Settings(), WorkerSettings()))
    return _DEFAULT[0]
