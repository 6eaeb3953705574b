"""Service overhead of the job pipeline and worker throughput, with real PostgreSQL, Redis, SeaweedFS,
API, relay and `lowbit worker` processes (the launchers the tests use).

    python -m bench worker [--jobs=50] [--stream=20]

1. Overhead: ``--jobs`` trivial jobs (QuantSim W8A8 on the digits example, calibration data only),
   one at a time with one worker: submit → done (seen by the client, polling every 20 ms, and
   created_at → finished_at on the server) minus the engine's own time (prepare + technique + export
   + evaluate, measured by the worker). p50 and p99. Target: overhead <= 1 s p50.
2. Throughput: ``--stream`` such jobs submitted at once to 2 worker processes: jobs per minute.
3. Dead-worker reclaim: a QAT job running on one of 2 workers; its pool process is SIGKILLed (as by
   the OOM killer), then, on a second job, the whole worker: seconds from the kill until the job runs
   its next attempt. The pool-process case is seen at once (the claimant's pid is gone); the
   whole-worker case waits for the stale-heartbeat threshold plus a reconciler pass (the bench runs
   with the tests' 5 s / 1 s; production defaults are 30 s / 5 s).
4. API cold start: ``lowbit serve-api`` from exec to the first 200 on /healthz (``--starts`` times),
   next to the bare import of the app module, against the stack's PostgreSQL and S3.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Generator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from bench.registry import register
from bench.table import print_table


def _opts(argv: list[str]) -> dict[str, int]:
    opts = {"jobs": 50, "stream": 20, "starts": 3}
    for arg in argv:
        key, _, value = arg.lstrip("-").partition("=")
        if key in opts:
            opts[key] = int(value)
    return opts


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _wait(client: Any, job_id: str, poll_s: float = 0.02) -> tuple[dict[str, Any], float]:
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job, time.perf_counter()
        time.sleep(poll_s)


@register("worker", help="job pipeline: service overhead p50/p99 (submit->done minus engine) and jobs/minute")
def worker_bench(argv: list[str]) -> None:
    from examples.digits import build
    from tests.fixtures.worker_procs import processes, start_relay, start_worker
    from tests.fixtures.worker_stack import start_stack

    opts = _opts(argv)
    with tempfile.TemporaryDirectory(prefix="lowbit-bench-worker-") as tmp:
        stacks = cast(Generator[Any, None, None], start_stack(Path(tmp), build()))
        stack = next(stacks)
        try:
            env = stack.env(progress_every_s=1.0, heartbeat_s=2.0)
            with processes() as procs, stack.client() as client:
                procs.append(start_relay(env, Path(tmp) / "relay.log"))
                procs.append(start_worker(env, Path(tmp) / "w0.log", "bench0"))
                _wait(
                    client, stack.submit(client)["id"]
                )  # warm-up: first job imports the engine in the child
                client_over, server_over, engine = [], [], []
                for _ in range(opts["jobs"]):
                    t0 = time.perf_counter()
                    job, t1 = _wait(client, stack.submit(client)["id"])
                    if job["status"] != "succeeded":
                        raise RuntimeError(f"bench job failed: {job['error']}")
                    eng = float(job["metrics"]["engine_seconds"])
                    server = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(
                        job["created_at"]
                    )
                    engine.append(eng)
                    client_over.append(t1 - t0 - eng)
                    server_over.append(server.total_seconds() - eng)
                rows = [
                    ["submit→done seen by client − engine", _pct(client_over, 0.5), _pct(client_over, 0.99)],
                    ["created→finished on server − engine", _pct(server_over, 0.5), _pct(server_over, 0.99)],
                    ["engine time (prepare..evaluate)", _pct(engine, 0.5), _pct(engine, 0.99)],
                ]
                print_table(f"Service overhead per trivial job, {opts['jobs']} jobs, 1 worker (s)",
                            ["measure", "p50", "p99"], rows)  # fmt: skip
                procs.append(start_worker(env, Path(tmp) / "w1.log", "bench1"))
                t0 = time.perf_counter()
                ids = [stack.submit(client)["id"] for _ in range(opts["stream"])]
                ends = [_wait(client, job_id, 0.1)[1] for job_id in ids]
                minutes = (max(ends) - t0) / 60
                print_table(f"Throughput, {opts['stream']} trivial jobs, 2 worker processes",
                            ["jobs", "seconds", "jobs/minute", "mean engine s/job"],
                            [[len(ids), minutes * 60, len(ids) / minutes, statistics.mean(engine)]])  # fmt: skip
                reclaim = [
                    _reclaim_seconds(stack, client, procs, env, Path(tmp), whole) for whole in (False, True)
                ]
                print_table("Dead-worker reclaim: kill -> the job's next attempt running (s)",
                            ["killed", "seconds", "stale threshold s", "reconcile every s"],
                            [["pool process (SIGKILL)", reclaim[0], env["LOWBIT_STALE_AFTER_S"],
                              env["LOWBIT_RECONCILE_INTERVAL_S"]],
                             ["whole worker (SIGKILL)", reclaim[1], env["LOWBIT_STALE_AFTER_S"],
                              env["LOWBIT_RECONCILE_INTERVAL_S"]]])  # fmt: skip
            starts = [_api_cold_start(env, Path(tmp) / f"api{i}.log") for i in range(opts["starts"])]
            imports = [_import_seconds() for _ in range(opts["starts"])]
            print_table(f"API cold start, {opts['starts']} starts (s)", ["measure", "p50", "max"],
                        [["exec -> first 200 on /healthz", statistics.median(starts), max(starts)],
                         ["import service.api.app alone", statistics.median(imports), max(imports)]])  # fmt: skip
        finally:
            stacks.close()


def _running_attempt(client: Any, job_id: str, attempt: int, poll_s: float = 0.05) -> float:
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] == "running" and job["attempts"] >= attempt:
            return time.perf_counter()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            raise RuntimeError(f"job {job_id} ended {job['status']} before attempt {attempt}: {job['error']}")
        time.sleep(poll_s)


def _reclaim_seconds(
    stack: Any, client: Any, procs: list[Any], env: dict[str, str], tmp: Path, whole: bool
) -> float:
    """Kill the process running a QAT job (its pool process, or the whole worker, then start a
    replacement) and time until the job's next attempt runs."""
    import os
    import signal

    from sqlalchemy import create_engine, select

    from service.db.models import Job
    from tests.fixtures.worker_procs import start_worker

    job_id = stack.submit(client, technique="qat", params={"epochs": 200})["id"]
    _running_attempt(client, job_id, 1)
    engine = create_engine(stack.settings.database_url)
    with engine.connect() as conn:
        pid = int(str(conn.scalar(select(Job.claimed_by).where(Job.id == job_id))).split("/")[1])
    engine.dispose()
    owner = next(p for p in procs if pid in p.children())
    t0 = time.perf_counter()
    if whole:
        owner.kill(signal.SIGKILL)
    else:
        os.kill(pid, signal.SIGKILL)
    seconds = _running_attempt(client, job_id, 2) - t0
    client.post(f"/v1/jobs/{job_id}/cancel")
    _wait(client, job_id, 0.1)
    if whole:
        procs.remove(owner)
        procs.append(start_worker(env, tmp / f"w{len(procs)}.log", f"bench{len(procs)}"))
    return seconds


def _api_cold_start(env: dict[str, str], log: Path) -> float:
    import sys

    from tests.fixtures.api_process import api_process

    t0 = time.perf_counter()
    with api_process(env, log, argv=[sys.executable, "-m", "core.cli", "serve-api"]):  # as `lowbit serve-api`
        return time.perf_counter() - t0


def _import_seconds() -> float:
    import subprocess
    import sys

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import service.api.app"], check=True)
    return time.perf_counter() - t0
