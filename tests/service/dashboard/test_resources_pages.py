"""Models and datasets pages, plus what every page owes users without JavaScript or a mouse."""

from __future__ import annotations

from service.db.models import ModelVersion
from service.db.repositories import resources
from service.db.session import session_scope
from tests.service.dashboard.conftest import Dash, make_job, parse, sign_in


def test_models_and_datasets_show_versions_sizes_and_jobs(dash: Dash) -> None:
    job = make_job(dash, dash.a, technique="analyze")
    with session_scope(dash.sessions) as session:
        model = resources.get_model(session, dash.a.project_id, dash.a.model_id)
        v2 = resources.create_version(session, model, "onnx")  # pending upload: no size yet
        v2_number = v2.version
    with dash.client() as client:
        sign_in(client, dash.a.key)
        models = client.get("/dashboard/models").text
        assert "net-a" in models and "2.0 KiB" in models and f"v{v2_number} · onnx · pending" in models
        detail = client.get(f"/dashboard/models/{dash.a.model_id}")
        assert detail.status_code == 200
        assert "v1" in detail.text and f"v{v2_number}" in detail.text and "—" in detail.text
        assert f"/dashboard/jobs/{job.id}" in parse(detail.text).links
        datasets = client.get("/dashboard/datasets").text
        assert "calib-a" in datasets and "4.0 KiB" in datasets
        ds = client.get(f"/dashboard/datasets/{dash.a.dataset_id}").text
        assert job.id in parse(ds).job_rows
        assert client.get("/dashboard/models/" + "0" * 26).status_code == 404
    with dash.sessions() as session:
        assert session.get(ModelVersion, dash.a.model_version_id) is not None


def test_pages_work_without_javascript_and_are_labelled(dash: Dash) -> None:
    """Given a signed-in client that runs no scripts, every page carries its data in the HTML, every
    form control has a label, ids are unique, and user-supplied names are escaped."""
    with session_scope(dash.sessions) as session:
        resources.create_model(session, dash.a.project_id, "<script>alert(1)</script>")
    job = make_job(dash, dash.a)
    with dash.client() as client:
        sign_in(client, dash.a.key)
        pages = ["/dashboard/jobs", f"/dashboard/jobs/{job.id}", "/dashboard/models",
                 f"/dashboard/models/{dash.a.model_id}", "/dashboard/datasets",
                 f"/dashboard/datasets/{dash.a.dataset_id}", "/dashboard/schedules", "/dashboard/login"]  # fmt: skip
        for path in pages:
            resp = client.get(path)
            assert resp.status_code == 200, path
            text = resp.text
            assert '<html lang="en">' in text and '<main id="main"' in text and 'href="#main"' in text
            assert "<script>alert(1)</script>" not in text
            doc = parse(text)
            unlabelled = [
                c for c in doc.controls if c.get("id") not in doc.label_for and not c.get("aria-label")
            ]
            assert not unlabelled, (path, unlabelled)
            assert len(doc.ids) == len(set(doc.ids)), path
        assert job.id in parse(client.get("/dashboard/jobs").text).job_rows
        assert "&lt;script&gt;" in client.get("/dashboard/models").text
        css = client.get("/dashboard/static/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert client.get("/dashboard/static/../settings.py").status_code == 404
        assert client.get("/dashboard/static/other.js").status_code == 404
