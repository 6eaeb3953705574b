"""A long job resumes after its worker dies: AutoQuant's stage cache lives in object storage keyed by
the job, so the retried attempt reuses the stages the killed attempt finished."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.fixtures.worker_procs import processes, start_relay, start_worker
from tests.fixtures.worker_stack import Stack, wait_job

pytestmark = [pytest.mark.slow]


def test_autoquant_resumes_from_stored_stage_cache(stack: Stack, tmp_path: Path) -> None:
    """Given a W4A8 AutoQuant job (allowed drop 0.01: reachable, since a drop of 0 now means zero and float
    weights alone already lose 0.2 point on this model), When the worker
    process is killed after a later stage started, Then attempt 2 logs the resume, reports the
    earlier stages as cached, and succeeds."""
    env = stack.env()
    with processes() as procs, stack.client() as client:
        procs.append(start_relay(env, tmp_path / "relay.log"))
        worker = start_worker(env, tmp_path / "w.log", "resume")
        procs.append(worker)
        job = stack.submit(
            client,
            technique="autoquant",
            param_bw=4,
            allowed_accuracy_drop=0.01,
            params={"adaround_iterations": 50},
            eval_dataset_id=stack.inputs["eval"],
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            logs = [line["message"] for line in client.get(f"/v1/jobs/{job['id']}/logs").json()]
            if any(
                m.startswith("autoquant stage ") and m.split()[-1] not in ("scheme_selection",) for m in logs
            ):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"AutoQuant never got past scheme selection: {worker.tail()}")
        for pid in worker.children():
            os.kill(pid, signal.SIGKILL)
        done = wait_job(client, job["id"], {"succeeded", "failed", "cancelled"}, timeout=240)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 2
        logs = [line["message"] for line in client.get(f"/v1/jobs/{job['id']}/logs").json()]
        assert "resuming AutoQuant from its stored stage cache" in logs
        stages = done["metrics"]["autoquant"]["stages"]
        assert any(s["cached"] for s in stages), stages
