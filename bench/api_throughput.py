"""API throughput: job-status GET and job-create POST under concurrent load, as ratios of a bare FastAPI
endpoint returning constant JSON, measured side by side in one run (targets: >= 0.5 and >= 0.25).
The create is measured twice: without Idempotency-Key, and with a new key per request (as the client
SDK sends it; the response is stored with the job). The status GET is measured twice too: on a job
that does not change (what polling clients mostly see), and on a job whose row a writer updates 20
times a second, as a busy worker's progress reports would (on PostgreSQL every update drops the API's
cached response, see service/db/status_cache.py).

Two bare baselines run side by side: a plain ``def`` endpoint and an ``async def`` one (see bare_app).
Each server runs in its own process (uvicorn, one worker) on loopback; the load generator is an
asyncio httpx client with a fixed number of connections in this process. Rounds are interleaved
(bare, status, create, keyed create, bare, ...) and the median of each is reported with p50/p99 latencies.

    python -m bench api [--db=postgres] [--seconds=2] [--concurrency=32] [--rounds=5]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.registry import register
from bench.table import print_table


def bare_app() -> Any:
    """The baselines: a FastAPI app returning constant JSON (uvicorn --factory), from a plain ``def``
    endpoint (FastAPI runs it on its threadpool, as most FastAPI code is written) and from an
    ``async def`` one (no thread hop: the fastest bare endpoint, and the stricter baseline now that
    lowbit's hot routes run on the event loop). Ratios are reported against both."""
    from fastapi import FastAPI

    app = FastAPI()
    body = {"id": "0" * 26, "status": "running", "progress": 0.5}

    @app.get("/const")
    def const() -> dict[str, Any]:
        return body

    @app.get("/const-async")
    async def const_async() -> dict[str, Any]:
        return body

    return app


def _opts(argv: list[str]) -> dict[str, str]:
    out = {"db": "sqlite", "seconds": "2", "concurrency": "32", "rounds": "5"}
    for arg in argv:
        key, _, value = arg.lstrip("-").partition("=")
        if key in out:
            out[key] = value
    return out


class _Conn:
    """A minimal keep-alive HTTP/1.1 client connection: httpx would make the load generator, not the
    server, the bottleneck on a 2-core machine."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])


def http_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """The bytes of one HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _load(
    url: str, raw: bytes | Callable[[], bytes], seconds: float, concurrency: int
) -> tuple[float, float, float, int]:
    """Send ``raw`` (or a fresh ``raw()`` per request) in a loop on ``concurrency`` connections for
    ``seconds``; (req/s, p50 ms, p99 ms, errors)."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal errors
        conn = _Conn(*await asyncio.open_connection(host, int(port)))
        try:
            while time.perf_counter() < deadline:
                request = raw if isinstance(raw, bytes) else raw()
                start = time.perf_counter()
                status = await conn.request(request)
                latencies.append(time.perf_counter() - start)
                errors += status >= 400
        finally:
            conn.writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return len(latencies) / elapsed, pct(0.5), pct(0.99), errors


def _setup_lowbit(env: dict[str, str]) -> str:
    """Migrate, create a project and an API key; returns the key."""
    from service.db.migrate import upgrade
    from service.db.repositories import projects
    from service.db.session import make_engine, make_sessionmaker, session_scope
    from service.settings import Settings

    settings = Settings(database_url=env["LOWBIT_DATABASE_URL"])
    upgrade(settings)
    engine = make_engine(settings)
    with session_scope(make_sessionmaker(engine)) as session:
        project = projects.create_project(session, f"bench-{uuid.uuid4().hex[:8]}")
        key = projects.create_api_key(session, project, "bench")[1]
    engine.dispose()
    return key


def _inputs(url: str, key: str) -> dict[str, Any]:
    import io

    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model_bytes = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    onnx.checker.check_model(model_bytes)
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((4, 1, 4), np.float32))
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
        model = c.post("/v1/models", json={"name": "bench"}).json()
        c.post(f"/v1/models/{model['id']}/versions", json={"format": "onnx"})
        c.put(f"/v1/models/{model['id']}/versions/1/content", content=model_bytes).raise_for_status()
        data = c.post("/v1/datasets", json={"name": "calib", "format": "npz"}).json()
        c.put(f"/v1/datasets/{data['id']}/content", content=buf.getvalue()).raise_for_status()
        body = {"model_id": model["id"], "calib_dataset_id": data["id"], "technique": "ptq"}
        job = c.post("/v1/jobs", json=body).json()
    return {"body": body, "job_id": job["id"]}


@contextlib.contextmanager
def _row_updates(db_url: str, job_id: str, per_second: float) -> Iterator[None]:
    """Update the job's progress ``per_second`` times a second (each its own commit) meanwhile."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.wait(1 / per_second):
            n += 1
            with engine.begin() as conn:
                conn.execute(
                    text("UPDATE jobs SET progress = :p WHERE id = :id"), {"p": n % 100 / 100, "id": job_id}
                )

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        engine.dispose()


@register("api", "API job-status GET and job-create throughput vs a bare FastAPI endpoint (loopback)")
def run(argv: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.fixtures.api_process import api_process  # the same launcher the tests use

    opts = _opts(argv)
    seconds, conc, rounds = float(opts["seconds"]), int(opts["concurrency"]), int(opts["rounds"])
    with tempfile.TemporaryDirectory(prefix="lowbit-bench-") as tmp:
        root = Path(tmp)
        db_url = f"sqlite:///{root / 'lowbit.db'}"
        drop: Callable[[], object] = lambda: None  # noqa: E731
        if opts["db"] == "postgres":
            from tests.fixtures.postgres import fresh_database

            ctx = fresh_database("lowbit_bench")
            db_url = ctx.__enter__()
            drop = lambda: ctx.__exit__(None, None, None)  # noqa: E731
        env = {
            "LOWBIT_DATABASE_URL": db_url,
            "LOWBIT_LOCAL_STORAGE_DIR": str(root / "objects"),
            "LOWBIT_RATE_LIMIT_PER_MINUTE": "0",
        }
        try:
            key = _setup_lowbit(env)
            bare_cmd = [sys.executable, "-m", "uvicorn", "--factory", "bench.api_throughput:bare_app"]
            with (
                api_process(env, root / "api.log") as (api_url, _),
                api_process(env, root / "bare.log", bare_cmd, health="/const") as (bare_url, _),
            ):
                inputs = _inputs(api_url, key)
                auth = {"Authorization": f"Bearer {key}"}
                body = json.dumps(inputs["body"]).encode()
                create = {**auth, "Content-Type": "application/json"}

                def keyed_create() -> bytes:
                    # What the client SDK sends: every create carries a new Idempotency-Key (a first use,
                    # never a replay), so the server stores the response with the job.
                    return http_request(
                        "POST", "/v1/jobs", {**create, "Idempotency-Key": uuid.uuid4().hex}, body
                    )

                status = http_request("GET", f"/v1/jobs/{inputs['job_id']}", auth)
                changing = 20.0
                scenarios: dict[str, tuple[str, bytes | Callable[[], bytes]]] = {
                    "bare constant JSON (def)": (bare_url, http_request("GET", "/const", {})),
                    "bare constant JSON (async def)": (bare_url, http_request("GET", "/const-async", {})),
                    "job status GET": (api_url, status),
                    f"job status GET, row updated {changing:.0f}/s": (api_url, status),
                    "job create POST": (api_url, http_request("POST", "/v1/jobs", create, body)),
                    "job create POST, Idempotency-Key": (api_url, keyed_create),
                }
                results: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in scenarios}
                for _ in range(rounds):
                    for name, (url, raw) in scenarios.items():
                        during = contextlib.nullcontext()
                        if "row updated" in name:
                            during = _row_updates(db_url, inputs["job_id"], changing)
                        with during:
                            results[name].append(asyncio.run(_load(url, raw, seconds, conc)))
        finally:
            drop()

    # Ratios are taken round by round (each scenario next to its own bare run) and then the median,
    # so load drifting on a shared machine affects both sides of each ratio alike.
    def ratio(runs: list[tuple[float, float, float, int]], bare: str) -> float:
        return statistics.median(r[0] / b[0] for r, b in zip(runs, results[bare], strict=True))

    rows = []
    for name, runs in results.items():
        rows.append([name, statistics.median(r[0] for r in runs), ratio(runs, "bare constant JSON (def)"),
                     ratio(runs, "bare constant JSON (async def)"), statistics.median(r[1] for r in runs),
                     statistics.median(r[2] for r in runs), sum(r[3] for r in runs)])  # fmt: skip
    print_table(
        f"API throughput ({opts['db']}, {conc} connections, {seconds:.0f} s x {rounds} rounds, 1 uvicorn worker)",
        ["scenario", "req/s", "ratio vs bare def", "ratio vs bare async def", "p50 ms", "p99 ms", "errors"],
        rows,
    )
    print(f"targets: status >= 0.5, create >= 0.25; keyed create reported (cpu count {os.cpu_count()})")
