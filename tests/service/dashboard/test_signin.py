"""Dashboard sign-in: API key -> signed session cookie, CSRF on every form, revocation, sign-out."""

from __future__ import annotations

from sqlalchemy import select

from service.dashboard.session import COOKIE_NAME
from service.db.models import ApiKey
from service.db.repositories import projects
from service.db.session import session_scope
from tests.service.dashboard.conftest import Dash, csrf_of, make_job, sign_in

PAGES = ("/dashboard/jobs", "/dashboard/models", "/dashboard/datasets")


def test_pages_redirect_to_sign_in_and_forms_refuse_without_session(dash: Dash) -> None:
    job = make_job(dash, dash.a)
    with dash.client() as client:
        for page in (*PAGES, f"/dashboard/jobs/{job.id}"):
            resp = client.get(page, follow_redirects=False)
            assert resp.status_code == 303 and resp.headers["location"].startswith("/dashboard/login?next=")
        resp = client.post(f"/dashboard/jobs/{job.id}/cancel", data={"csrf_token": "x"})
        assert resp.status_code == 403
    with dash.sessions() as session:
        assert session.get(type(job), job.id).status == "queued"  # type: ignore[union-attr]


def test_sign_in_sets_hardened_cookie_and_returns_to_next(dash: Dash) -> None:
    with dash.client() as client:
        form = client.get("/dashboard/login?next=/dashboard/models")
        resp = client.post(
            "/dashboard/login",
            data={"api_key": dash.a.key, "csrf_token": csrf_of(form.text), "next": "/dashboard/models"},
            follow_redirects=False,
        )
        assert resp.status_code == 303 and resp.headers["location"] == "/dashboard/models"
        cookie = next(c for c in resp.headers.get_list("set-cookie") if c.startswith(COOKIE_NAME + "="))
        flags = cookie.lower()
        assert "httponly" in flags and "samesite=lax" in flags and "path=/dashboard" in flags
        assert dash.a.key not in cookie  # the key itself never travels in the cookie
        page = client.get("/dashboard/models")
        assert page.status_code == 200 and "net-a" in page.text


def test_sign_in_refuses_bad_keys_foreign_next_and_missing_csrf(dash: Dash) -> None:
    with dash.client() as client:
        token = csrf_of(client.get("/dashboard/login").text)
        bad = client.post("/dashboard/login", data={"api_key": "lb_nope", "csrf_token": token})
        assert bad.status_code == 401 and "Unknown or revoked API key" in bad.text
        assert COOKIE_NAME not in client.cookies
        no_csrf = client.post("/dashboard/login", data={"api_key": dash.a.key, "csrf_token": "forged"})
        assert no_csrf.status_code == 401 and COOKIE_NAME not in client.cookies
        token = csrf_of(client.get("/dashboard/login").text)
        resp = client.post(
            "/dashboard/login",
            data={"api_key": dash.a.key, "csrf_token": token, "next": "//evil.example/x"},
            follow_redirects=False,
        )
        assert resp.headers["location"] == "/dashboard/jobs"  # no open redirect


def test_tampered_cookie_is_rejected(dash: Dash) -> None:
    with dash.client() as client:
        sign_in(client, dash.a.key)
        value = client.cookies[COOKIE_NAME]
        body, sig = value.rsplit(".", 1)
        client.cookies.clear()
        good = {"cookie": f"{COOKIE_NAME}={value}"}
        assert client.get("/dashboard/jobs", headers=good, follow_redirects=False).status_code == 200
        flipped = body + "." + ("0" if sig[0] != "0" else "1") + sig[1:]
        bad = {"cookie": f"{COOKIE_NAME}={flipped}"}
        assert client.get("/dashboard/jobs", headers=bad, follow_redirects=False).status_code == 303


def test_revoking_the_key_ends_its_sessions_and_sign_out_clears_cookie(dash: Dash) -> None:
    with session_scope(dash.sessions) as session:
        project = projects.create_project(session, f"revoke-{dash.a.project_id[-6:]}")
        row, key = projects.create_api_key(session, project, "temp")
    with dash.client() as client:
        sign_in(client, key)
        assert client.get("/dashboard/jobs").status_code == 200
        with session_scope(dash.sessions) as session:
            found = session.scalar(select(ApiKey).where(ApiKey.id == row.id))
            assert found is not None
            projects.revoke_api_key(session, found)
        assert client.get("/dashboard/jobs", follow_redirects=False).status_code == 303
    with dash.client() as client:
        sign_in(client, dash.a.key)
        page = client.get("/dashboard/jobs")
        assert client.post("/dashboard/logout", data={"csrf_token": "wrong"}).status_code == 403
        resp = client.post(
            "/dashboard/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
        )
        assert resp.status_code == 303
        assert COOKIE_NAME not in client.cookies
        assert client.get("/dashboard/jobs", follow_redirects=False).status_code == 303
