"""The Python client against the live API (both modes): uploads, submit, wait with progress, download."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from service.client import ClientError, LowbitClient
from service.db.models import Job
from service.db.repositories import jobs as jobs_repo
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.jobs import state
from service.storage import job_artifact_key, make_store
from tests.service.conftest import Api
from tests.service.samples import npz_bytes, onnx_bytes


def test_submit_wait_download(api: Api, tmp_path: Path) -> None:
    (tmp_path / "net.onnx").write_bytes(onnx_bytes(9))
    (tmp_path / "calib.npz").write_bytes(npz_bytes(9))
    with LowbitClient(api.url, api.key) as client:
        version = client.upload_model(tmp_path / "net.onnx", name="client-net")
        assert version["status"] == "ready"
        again = client.upload_model(tmp_path / "net.onnx", name="client-net")
        assert again == version  # identical content: the stored version is reused
        (tmp_path / "net2.onnx").write_bytes(onnx_bytes(10))
        other = client.upload_model(tmp_path / "net2.onnx", name="client-net")
        assert other["version"] == version["version"] + 1 and other["sha256"] != version["sha256"]
        data = client.upload_dataset(tmp_path / "calib.npz")
        assert client.upload_dataset(tmp_path / "calib.npz", name="another-name") == data
        assert client.upload_dataset(tmp_path / "calib.npz", kind="evaluation")["id"] != data["id"]
        job = client.submit(
            {"model_id": version["model_id"], "calib_dataset_id": data["id"], "technique": "quantsim"}
        )
        engine = make_engine(api.settings)
        sessions = make_sessionmaker(engine)
        store = make_store(api.settings)

        def worker() -> None:
            """Plays the worker: runs, reports progress, stores an artifact, succeeds."""
            with session_scope(sessions) as session:
                row = session.get(Job, job["id"])
                assert row is not None
                state.transition(session, row, state.RUNNING, stage="calibrate", progress=0.4)
            key = job_artifact_key(job["id"], "model.encodings")
            store.put_bytes(key, b'{"version": "1.0.0"}')
            with session_scope(sessions) as session:
                row = session.get(Job, job["id"])
                assert row is not None
                jobs_repo.add_artifact(session, row, "model.encodings", key, 20, None, "application/json")
                state.transition(session, row, state.SUCCEEDED, metrics={"sqnr_db": 40.0})

        updates: list[dict[str, object]] = []
        thread = threading.Timer(0.5, worker)
        thread.start()
        done = client.wait(job["id"], on_update=updates.append, timeout_s=60)
        thread.join()
        engine.dispose()
        assert done["status"] == "succeeded" and done["metrics"] == {"sqnr_db": 40.0}
        assert next(u["status"] for u in updates) == "queued" and updates[-1]["status"] == "succeeded"
        files = client.download(job["id"], tmp_path / "out")
        assert [f.name for f in files] == ["model.encodings"]
        assert files[0].read_bytes() == b'{"version": "1.0.0"}'
        with pytest.raises(ClientError) as err:
            client.job("0" * 26)
        assert err.value.status == 404 and err.value.code == "not_found"
        with pytest.raises(ClientError, match="model files must end"):
            client.upload_model(tmp_path / "calib.npz")


def test_plain_http_client_loads_no_ca_bundle_and_would_refuse_unverified_tls() -> None:
    """An http:// API needs no CA bundle (parsing it cost ~0.05 s of every CLI start), but the context
    used instead must fail closed: certificates and host names required, and no CA to trust."""
    import ssl

    from service.client import _tls_context

    ctx = _tls_context("http://127.0.0.1:8000")
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] == 0
    assert _tls_context("HTTPS://lowbit.example") is True  # https keeps httpx's default verification
