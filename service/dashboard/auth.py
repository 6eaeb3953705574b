"""Who is looking at the dashboard: the session cookie checked against live API keys, and CSRF checks.

A session is only as good as the API key that opened it: every request re-checks that the key exists, is
not revoked and still belongs to the cookie's project, so revoking a key signs its dashboard sessions out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from fastapi import Depends, Form, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.context import AppContext, app_context, db_session
from service.dashboard.session import COOKIE_NAME, SessionSigner
from service.db.models import ApiKey, Project
from service.errors import ServiceError

SESSION_MAX_AGE_S = 12 * 3600


class SignInRequired(Exception):
    """No valid session: GET pages redirect to the sign-in form, POSTs answer 403."""


class CsrfError(ServiceError):
    """A dashboard form came back without this session's CSRF token."""

    code = "csrf_failed"


@dataclass(frozen=True)
class Viewer:
    """The signed-in caller: every dashboard query is scoped to ``project_id``."""

    project_id: str
    project_name: str
    key_id: str
    key_prefix: str
    nonce: str
    csrf: str


@lru_cache(maxsize=8)
def signer_for(secret: str) -> SessionSigner:
    """The session signer for the service secret key (cached: one per secret)."""
    return SessionSigner(secret, SESSION_MAX_AGE_S)


def signer(ctx: AppContext = Depends(app_context)) -> SessionSigner:
    return signer_for(ctx.settings.secret_key)


def current_viewer(
    request: Request,
    session: Session = Depends(db_session),
    sessions: SessionSigner = Depends(signer),
) -> Viewer:
    """The viewer of a valid session whose API key is still live; SignInRequired otherwise."""
    found = sessions.read(request.cookies.get(COOKIE_NAME))
    if found is None:
        raise SignInRequired
    row = session.execute(
        select(ApiKey, Project.name)
        .join(Project, Project.id == ApiKey.project_id)
        .where(ApiKey.id == found.key_id, ApiKey.project_id == found.project_id)
    ).first()
    if row is None or row[0].revoked_at is not None:
        raise SignInRequired
    key, project_name = row
    viewer = Viewer(
        project_id=key.project_id,
        project_name=project_name,
        key_id=key.id,
        key_prefix=key.prefix,
        nonce=found.nonce,
        csrf=sessions.csrf_token(found.nonce),
    )
    request.state.dashboard_viewer = viewer
    return viewer


def checked_viewer(
    csrf_token: str = Form(default=""),
    viewer: Viewer = Depends(current_viewer),
    sessions: SessionSigner = Depends(signer),
) -> Viewer:
    """``current_viewer`` for state-changing POSTs: the form must carry the session's CSRF token."""
    if not sessions.check_csrf(viewer.nonce, csrf_token):
        raise CsrfError("the form's security token is missing or stale; reload the page and try again")
    return viewer
