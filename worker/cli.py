"""`lowbit worker`, `lowbit beat` and `lowbit relay` (registered through the ``lowbit.commands``
entry point group, like service/cli.py).

    lowbit worker --queues cpu --concurrency 2          # one GPU worker per GPU: CUDA_VISIBLE_DEVICES=0 lowbit worker --queues gpu
    lowbit beat                                          # schedule tick each minute + reconciler
    lowbit relay                                         # outbox relay + reconciler loop
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
from typing import Any

OK = 0


def _apps() -> tuple[Any, Any, Any]:
    from service.settings import Settings
    from worker.app import create_celery
    from worker.settings import WorkerSettings

    settings, wsettings = Settings(), WorkerSettings()
    return settings, wsettings, create_celery(settings, wsettings)


def cmd_worker(args: argparse.Namespace) -> int:
    _settings, wsettings, app = _apps()
    queues = args.queues or wsettings.queues
    name = args.name or f"lowbit-{queues.replace(',', '-')}-{os.getpid()}@{socket.gethostname()}"
    argv = ["worker", "-Q", queues, "-c", str(args.concurrency or wsettings.concurrency), "-P", "prefork",
            "-n", name, "--without-gossip", "--without-mingle", "-l", args.loglevel]  # fmt: skip
    if args.max_tasks_per_child:
        argv += ["--max-tasks-per-child", str(args.max_tasks_per_child)]
    app.worker_main(argv)
    return OK


def cmd_beat(args: argparse.Namespace) -> int:
    _settings, _ws, app = _apps()
    schedule = args.schedule_file or os.path.join(os.getcwd(), ".lowbit", f"beat-{os.getpid()}")
    os.makedirs(os.path.dirname(schedule), exist_ok=True)
    app.start(["beat", "-s", schedule, "-l", args.loglevel])
    return OK


def cmd_relay(args: argparse.Namespace) -> int:
    from worker.relay import run_loop
    from worker.tasks import resources

    settings, wsettings, app = _apps()
    from service.log_format import configure_logging

    configure_logging(settings.log_format, args.loglevel)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    db, _ = resources(settings, wsettings)
    run_loop(db, app, stop)
    return OK


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the worker, beat and relay sub-commands."""
    p = subparsers.add_parser("worker", help="run a Celery worker for lowbit jobs")
    p.add_argument("--queues", help="comma-separated queues (default LOWBIT_QUEUES or cpu)")
    p.add_argument("--concurrency", type=int, help="worker processes (default LOWBIT_CONCURRENCY or 1)")
    p.add_argument("--name", help="Celery node name")
    p.add_argument("--max-tasks-per-child", type=int, default=0)
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=cmd_worker)
    p = subparsers.add_parser("beat", help="run Celery beat (schedule tick, reconciler)")
    p.add_argument("--schedule-file", help="beat's state file (default ./.lowbit/beat-<pid>)")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=cmd_beat)
    p = subparsers.add_parser("relay", help="publish the job outbox and reconcile stuck jobs, in a loop")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=cmd_relay)
