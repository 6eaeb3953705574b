"""Projects and API keys: creation (admin) and authentication (every request)."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import ApiKey, Project
from service.errors import AuthError, ConflictError, NotFoundError

KEY_PREFIX = "lb_"


def hash_key(plaintext: str) -> str:
    """The stored form of an API key (sha256 hex; keys carry 256 random bits, so no slow hash is needed)."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_project(session: Session, name: str) -> Project:
    """A new project named ``name``; ConflictError when the name is taken."""
    if session.scalar(select(Project).where(Project.name == name)) is not None:
        raise ConflictError(f"project {name!r} already exists", code="project_exists")
    project = Project(name=name)
    session.add(project)
    session.flush()
    return project


def get_project_by_name(session: Session, name: str) -> Project:
    """The project named ``name`` or NotFoundError."""
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise NotFoundError(f"no project named {name!r}")
    return project


def create_api_key(session: Session, project: Project, name: str = "") -> tuple[ApiKey, str]:
    """A new key for ``project``; returns (row, plaintext). The plaintext is shown once and never stored."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(project_id=project.id, name=name, key_hash=hash_key(plaintext), prefix=plaintext[:10])
    session.add(key)
    session.flush()
    return key, plaintext


def authenticate(session: Session, plaintext: str) -> ApiKey:
    """The live ApiKey for ``plaintext``; AuthError when unknown or revoked."""
    if not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 200:
        raise AuthError("malformed API key; expected 'Authorization: Bearer lb_...'")
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext)))
    if key is None or key.revoked_at is not None:
        raise AuthError("unknown or revoked API key")
    return key


def revoke_api_key(session: Session, key: ApiKey) -> None:
    """Revoke ``key``; later requests with it get 401."""
    key.revoked_at = utcnow()
