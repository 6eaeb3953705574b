"""The service CLI as a user runs it: db upgrade, admin keys, serve-api, submit/jobs/job/cancel/download."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service import cli
from tests.fixtures.api_process import api_process
from tests.service.samples import npz_bytes, onnx_bytes


def _lowbit(env: dict[str, str], *args: str, module: str = "service.cli") -> subprocess.CompletedProcess[str]:
    """Run a service command; ``module='core.cli'`` goes through the full `lowbit` entry point (slower:
    it loads the engine commands too), the default runs the service commands alone."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_exit_codes_match_core() -> None:
    from core.commands import exit_codes

    for name in (
        "OK",
        "FAILURE",
        "USAGE",
        "BAD_INPUT",
        "ACCURACY_TARGET_MISSED",
        "CANCELLED",
        "SERVICE_ERROR",
    ):
        assert getattr(cli, name) == getattr(exit_codes, name)


@pytest.mark.slow
def test_cli_round_trip_on_embedded_defaults(tmp_path: Path) -> None:
    """Given an empty directory, the CLI migrates, creates a key, serves, submits, lists, shows and cancels."""
    env = {
        "LOWBIT_DATABASE_URL": f"sqlite:///{tmp_path / 'lowbit.db'}",
        "LOWBIT_LOCAL_STORAGE_DIR": str(tmp_path / "objects"),
        "LOWBIT_BROKER_FOLDER": str(tmp_path / "broker"),
    }
    upgraded = _lowbit(
        env, "db", "upgrade", module="core.cli"
    )  # registered via the lowbit.commands entry point
    assert upgraded.returncode == 0, upgraded.stderr
    assert _lowbit(env, "admin", "create-project", "demo").returncode == 0
    dup = _lowbit(env, "admin", "create-project", "demo")
    assert dup.returncode == cli.USAGE and "already exists" in dup.stderr
    key = _lowbit(env, "admin", "create-key", "demo").stdout.strip()
    assert key.startswith("lb_")
    (tmp_path / "net.onnx").write_bytes(onnx_bytes(5))
    (tmp_path / "calib.npz").write_bytes(npz_bytes(5))
    with api_process(env, tmp_path / "api.log") as (url, _pid):
        client_env = {**env, "LOWBIT_URL": url, "LOWBIT_API_KEY": key}
        sub = _lowbit(
            client_env, "submit", str(tmp_path / "net.onnx"), "--calib", str(tmp_path / "calib.npz")
        )
        assert sub.returncode == 0, sub.stderr
        job_id = sub.stdout.strip()
        listing = _lowbit(client_env, "jobs")
        assert job_id in listing.stdout and "queued" in listing.stdout
        shown = json.loads(_lowbit(client_env, "job", job_id).stdout)
        assert shown["status"] == "queued" and shown["spec"]["technique"] == "ptq"
        sha = hashlib.sha256(onnx_bytes(5)).hexdigest()
        assert (shown["model_version"], shown["model_sha256"]) == (1, sha)
        assert _lowbit(client_env, "cancel", job_id).stdout.strip() == "cancelled"
        finished = _lowbit(client_env, "job", job_id, "--wait")
        assert finished.returncode == cli.CANCELLED
        assert f"model version 1 sha256 {sha}" in finished.stdout
        down = _lowbit(client_env, "download", job_id, str(tmp_path / "out"))
        assert down.returncode == cli.CANCELLED and down.stdout == ""  # a cancelled job has no artifacts
        bad = _lowbit({**client_env, "LOWBIT_API_KEY": "lb_wrong"}, "jobs")
        assert bad.returncode == cli.SERVICE_ERROR and "unauthorized" in bad.stderr
        wrong = _lowbit(client_env, "job", "0" * 26)
        assert wrong.returncode == cli.BAD_INPUT and "not_found" in wrong.stderr


def test_db_wait_returns_once_the_schema_is_at_head(tmp_path: Path) -> None:
    """`lowbit db wait` (the Kubernetes init container) fails on an unmigrated database and passes once
    `lowbit db upgrade` ran."""
    env = {"LOWBIT_DATABASE_URL": f"sqlite:///{tmp_path / 'lowbit.db'}"}
    waited = _lowbit(env, "db", "wait", "--timeout", "0.5", "--interval", "0.1")
    assert waited.returncode == cli.FAILURE and "not at the newest migration" in waited.stderr
    assert _lowbit(env, "db", "upgrade").returncode == 0
    assert _lowbit(env, "db", "wait", "--timeout", "5").returncode == 0
