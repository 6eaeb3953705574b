"""Every `lowbit` client command's exit code and message, against a live API (README's exit-code table).

The worker's part is played through the database (state transitions), so each outcome (failed,
cancelled, target missed) is reached without running an engine job.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.cli import main
from service.cli import (
    ACCURACY_TARGET_MISSED,
    BAD_INPUT,
    CANCELLED,
    FAILURE,
    OK,
    SERVICE_ERROR,
    USAGE,
)
from service.db.migrate import upgrade
from service.db.models import Job
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.jobs import state
from service.settings import Settings
from tests.fixtures.live_api import free_port, live_api
from tests.service.samples import new_project_key, npz_bytes, onnx_bytes


@dataclass
class Server:
    url: str
    key: str
    settings: Settings
    files: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {"LOWBIT_URL": self.url, "LOWBIT_API_KEY": self.key, **extra}

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("cli")
    settings = Settings(
        database_url=f"sqlite:///{root / 'lowbit.db'}",
        storage="local",
        local_storage_dir=str(root / "objects"),
        secret_key="test-secret",
        rate_limit_per_minute=0,
    )
    upgrade(settings)
    key = new_project_key(settings, "cli")
    files = root / "files"
    files.mkdir()
    (files / "net.onnx").write_bytes(onnx_bytes(3))
    (files / "net.pt2").write_bytes(b"PK not really a pt2")
    (files / "broken.onnx").write_bytes(b"this is not an ONNX protobuf")
    (files / "calib.npz").write_bytes(npz_bytes(3))
    with live_api(settings) as (url, live):
        yield Server(url, key, live, files)


def lowbit(
    env: dict[str, str], *args: str, cwd: Path | None = None, process: bool = False
) -> subprocess.CompletedProcess[str]:
    """`lowbit ARGS` with only ``env``'s LOWBIT_* settings: in this process (fast; an escaping exception
    fails the test), or with ``process`` as a user runs it, in a new interpreter."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOWBIT_")}
    if process:
        base["PYTHONPATH"] = os.getcwd()  # this checkout's code, whatever ``cwd`` is
        out = subprocess.run(
            [sys.executable, "-m", "core.cli", *args],
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd,
        )
    else:
        out = _in_process(list(args), {**base, **env}, cwd)
    assert "Traceback" not in out.stderr, out.stderr  # no traceback ever reaches a user
    return out


def _in_process(argv: list[str], env: dict[str, str], cwd: Path | None) -> subprocess.CompletedProcess[str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(env)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse: usage errors, --help, --version
                code = exc.code if isinstance(exc.code, int) else USAGE
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def _finish(server: Server, job_id: str, status: str, **fields: Any) -> None:
    """Play the worker: take the job to ``status`` through the state machine."""
    engine = make_engine(server.settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            job = session.get(Job, job_id)
            assert job is not None
            if status == state.CANCELLED:
                state.request_cancel(session, job)
            else:
                state.transition(session, job, state.RUNNING, stage="calibrate", progress=0.5)
                state.transition(session, job, status, **fields)
    finally:
        engine.dispose()


def _submit(server: Server, *extra: str) -> str:
    f = server.files
    out = lowbit(server.env(), "submit", str(f / "net.onnx"), "--calib", str(f / "calib.npz"), *extra)
    assert out.returncode == OK, out.stderr
    assert "/dashboard/jobs/" in out.stderr
    return out.stdout.strip()


def test_local_mistakes_are_usage_or_bad_input(server: Server, tmp_path: Path) -> None:
    f = server.files
    missing = lowbit(
        server.env(), "submit", str(tmp_path / "nope.onnx"), "--calib", str(f / "calib.npz"), process=True
    )
    assert missing.returncode == BAD_INPUT and "nope.onnx: no such file" in missing.stderr
    wrong_suffix = lowbit(server.env(), "submit", str(f / "calib.npz"), "--calib", str(f / "calib.npz"))
    assert wrong_suffix.returncode == BAD_INPUT and "must end in .onnx, .pt2" in wrong_suffix.stderr
    bad_json = lowbit(
        server.env(), "submit", str(f / "net.onnx"), "--calib", str(f / "calib.npz"), "--params", "{bad json",
        process=True,
    )  # fmt: skip
    assert bad_json.returncode == USAGE and "--params: not valid JSON" in bad_json.stderr
    (tmp_path / "cfg.json").write_text("{oops")
    bad_cfg = lowbit(
        server.env(), "submit", str(f / "net.onnx"), "--calib", str(f / "calib.npz"), "--config",
        str(tmp_path / "cfg.json"),
    )  # fmt: skip
    assert bad_cfg.returncode == BAD_INPUT and "cfg.json: not valid JSON" in bad_cfg.stderr
    assert lowbit({}, "submit").returncode == USAGE
    assert lowbit({}, "no-such-command").returncode == USAGE


def test_rejected_spec_uploads_nothing(server: Server) -> None:
    """Given a bad bitwidth or an autoquant job without a target, When submitted, Then the dry run refuses
    it (exit 3, naming the field) and no model, version or dataset was created."""
    with server.http() as http:
        before = (http.get("/v1/models").json()["items"], http.get("/v1/datasets").json()["items"])
    f = server.files
    args = ("submit", str(f / "net.onnx"), "--calib", str(f / "calib.npz"), "--model-name", "dry-run")
    bad_bw = lowbit(server.env(), *args, "--param-bw", "1")
    assert bad_bw.returncode == BAD_INPUT and "param_bw" in bad_bw.stderr
    no_target = lowbit(server.env(), *args, "--technique", "autoquant")
    assert no_target.returncode == BAD_INPUT and "allowed_accuracy_drop" in no_target.stderr
    bad_params = lowbit(server.env(), *args, "--params", '{"steps": ["magic"]}')
    assert (
        bad_params.returncode == BAD_INPUT and "steps" in bad_params.stderr and "bn_fold" in bad_params.stderr
    )
    with server.http() as http:
        after = (http.get("/v1/models").json()["items"], http.get("/v1/datasets").json()["items"])
    assert after == before


def test_file_the_server_rejects_is_bad_input(server: Server) -> None:
    f = server.files
    out = lowbit(server.env(), "submit", str(f / "broken.onnx"), "--calib", str(f / "calib.npz"))
    assert out.returncode == BAD_INPUT and "rejected" in out.stderr


def test_identical_files_are_reused_and_formats_stay_apart(server: Server) -> None:
    """Given two submits of the same bytes, Then both jobs use one model version and one dataset; a
    .pt2 under the .onnx model's name is refused with the option that fixes it."""
    first, second = _submit(server, "--name", "first", "--label", "team=vision"), _submit(server)
    with server.http() as http:
        a, b = http.get(f"/v1/jobs/{first}").json(), http.get(f"/v1/jobs/{second}").json()
        assert a["model_version_id"] == b["model_version_id"]
        assert a["calib_dataset_id"] == b["calib_dataset_id"]
        assert a["spec"]["name"] == "first" and a["spec"]["labels"] == {"team": "vision"}
        calib = http.get("/v1/datasets", params={"kind": "calibration"}).json()["items"]
        assert len([d for d in calib if d["id"] == a["calib_dataset_id"]]) == 1
    f = server.files
    clash = lowbit(server.env(), "submit", str(f / "net.pt2"), "--calib", str(f / "calib.npz"))
    assert clash.returncode == BAD_INPUT
    assert "holds onnx versions" in clash.stderr and "--model-name net-pt2" in clash.stderr
    listed = lowbit(server.env(), "jobs")
    assert listed.returncode == OK and first in listed.stdout and "first" in listed.stdout
    models = lowbit(server.env(), "models", "--json")
    assert models.returncode == OK and "net" in {m["name"] for m in json.loads(models.stdout)}


@pytest.mark.parametrize(
    ("status", "fields", "code"),
    [
        (state.SUCCEEDED, {"metrics": {"evaluation": {"metric": "accuracy", "fp32": 0.98, "sim": 0.97}}}, OK),
        (
            state.SUCCEEDED,
            {"metrics": {"autoquant": {"target_met": False, "message": "W8A8 short"}}},
            ACCURACY_TARGET_MISSED,
        ),
        (state.FAILED, {"error": {"type": "LowbitError", "message": "no quantizable layer"}}, FAILURE),
        (state.CANCELLED, {}, CANCELLED),
    ],
)
def test_finished_job_exit_codes(
    server: Server, tmp_path: Path, status: str, fields: dict[str, Any], code: int
) -> None:
    job_id = _submit(server)
    _finish(server, job_id, status, **fields)
    waited = lowbit(server.env(), "job", job_id, "--wait")
    assert waited.returncode == code, waited.stderr
    assert f"/dashboard/jobs/{job_id}" in waited.stdout
    if code == OK:
        assert "simulated (QuantSim)" in waited.stdout and "0.9700" in waited.stdout
        assert json.loads(lowbit(server.env(), "job", job_id, "--json").stdout)["status"] == status
    down = lowbit(server.env(), "download", job_id, str(tmp_path / "out"))
    if code in (OK, ACCURACY_TARGET_MISSED):
        assert down.returncode == OK
    else:
        assert down.returncode == code and f"is {status}: nothing to download" in down.stderr
    if status == state.FAILED:
        assert "no quantizable layer" in down.stderr and "no quantizable layer" in waited.stderr


def test_where_settings_came_from_is_in_every_error(server: Server, tmp_path: Path) -> None:
    wrong = lowbit(server.env(LOWBIT_API_KEY="lb_wrong"), "jobs", process=True)
    assert wrong.returncode == SERVICE_ERROR
    assert "unauthorized" in wrong.stderr and "API key from LOWBIT_API_KEY was refused" in wrong.stderr
    # A local server's data directory gives the URL even when the key comes from the environment.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "url").write_text(server.url)
    (data_dir / "api_key").write_text(server.key)
    wrong_key_local = lowbit({"LOWBIT_DATA_DIR": str(data_dir), "LOWBIT_API_KEY": "lb_wrong"}, "jobs")
    assert wrong_key_local.returncode == SERVICE_ERROR and "cannot reach" not in wrong_key_local.stderr
    assert f"LOWBIT_DATA_DIR={data_dir}/url" in wrong_key_local.stderr
    assert lowbit({"LOWBIT_DATA_DIR": str(data_dir)}, "jobs").returncode == OK
    alone = lowbit({"LOWBIT_URL": server.url}, "jobs", cwd=tmp_path)
    assert alone.returncode == SERVICE_ERROR
    assert "no API key" in alone.stderr and "LOWBIT_URL" in alone.stderr and "LOWBIT_API_KEY" in alone.stderr
    assert lowbit(server.env(LOWBIT_URL=server.url + "/v1/"), "jobs").returncode == OK
    down = lowbit(server.env(LOWBIT_URL=f"http://127.0.0.1:{free_port()}"), "jobs")
    assert down.returncode == SERVICE_ERROR and "cannot reach" in down.stderr and "LOWBIT_URL" in down.stderr
    not_api = lowbit(server.env(LOWBIT_URL=server.url + "/dashboard"), "jobs")
    assert not_api.returncode == SERVICE_ERROR and "no lowbit API at" in not_api.stderr
    unknown = lowbit(server.env(), "job", "0" * 26)
    assert unknown.returncode == BAD_INPUT and "not_found" in unknown.stderr


def test_client_commands_import_no_torch() -> None:
    """`lowbit --help`, `lowbit jobs --help` and `lowbit --version` load no engine module."""
    probe = (
        "import sys\nfrom core.cli import main\n"
        "for argv in (['--help'], ['jobs', '--help'], ['submit', '--help'], ['--version']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stderr.strip().endswith("NO-TORCH"), out.stderr
    assert "submit" in out.stdout and "quantize" in out.stdout and "lowbit 0" in out.stdout
    assert "(default: min_max)" in out.stdout  # submit's help shows defaults
