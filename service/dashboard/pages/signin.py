"""Sign-in with an API key (exchanged for a signed session cookie) and sign-out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from service.api.context import AppContext, app_context, db_session
from service.dashboard.auth import SESSION_MAX_AGE_S, Viewer, checked_viewer, signer
from service.dashboard.router import PREFIX, DashboardRoute, renderer
from service.dashboard.session import COOKIE_NAME, LOGIN_CSRF_COOKIE, SessionSigner, new_login_nonce
from service.db.repositories import projects
from service.errors import AuthError

router = APIRouter(route_class=DashboardRoute)


def _safe_next(target: str | None) -> str:
    """Only same-site dashboard paths may follow sign-in (no open redirect to another host)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/jobs"


def _cookie_args(ctx: AppContext) -> dict[str, object]:
    return {
        "httponly": True,
        "samesite": "lax",
        "secure": ctx.settings.public_url.startswith("https://"),
        "path": PREFIX,
    }


def _form(request: Request, sessions: SessionSigner, ctx: AppContext, nxt: str, error: str = "") -> Response:
    nonce = request.cookies.get(LOGIN_CSRF_COOKIE) or new_login_nonce()
    response = renderer().page(
        request,
        "login.html",
        status_code=401 if error else 200,
        login_csrf=sessions.csrf_token(nonce),
        next=nxt,
        error=error,
    )
    response.set_cookie(LOGIN_CSRF_COOKIE, nonce, max_age=3600, **_cookie_args(ctx))  # type: ignore[arg-type]
    return response


@router.get("/login")
def login_form(
    request: Request,
    next: str | None = None,
    sessions: SessionSigner = Depends(signer),
    ctx: AppContext = Depends(app_context),
) -> Response:
    """The sign-in form."""
    return _form(request, sessions, ctx, _safe_next(next))


@router.post("/login")
def login(
    request: Request,
    api_key: str = Form(default=""),
    csrf_token: str = Form(default=""),
    next: str = Form(default=""),
    sessions: SessionSigner = Depends(signer),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> Response:
    """Check the API key; on success set the session cookie and go to ``next`` (a dashboard path)."""
    target = _safe_next(next)
    nonce = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not nonce or not sessions.check_csrf(nonce, csrf_token):
        return _form(request, sessions, ctx, target, "The sign-in form expired. Please try again.")
    client = request.client.host if request.client else "unknown"
    ctx.auth_failures.check(client)  # 429 after repeated wrong keys from this client
    try:
        key = projects.authenticate(session, api_key.strip())
    except AuthError:
        ctx.auth_failures.failed(client)
        return _form(request, sessions, ctx, target, "Unknown or revoked API key. Keys start with 'lb_'.")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        sessions.issue(key.id, key.project_id),
        max_age=SESSION_MAX_AGE_S,
        **_cookie_args(ctx),  # type: ignore[arg-type]
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=PREFIX)
    return response


@router.post("/logout")
def logout(_: Viewer = Depends(checked_viewer), ctx: AppContext = Depends(app_context)) -> Response:
    """Drop the session cookie and return to the sign-in form."""
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path=PREFIX, httponly=True, samesite="lax")
    return response


@router.get("/")
def home() -> Response:
    return RedirectResponse(f"{PREFIX}/jobs", status_code=303)
