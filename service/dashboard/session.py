"""Signed dashboard session cookies and the CSRF tokens bound to them (HMAC-SHA256, stdlib only).

The cookie holds ``base64url(json) "." hex(hmac)``; the JSON names the API key id (never the key itself),
its project, a random nonce and the issue time. The CSRF token of a session is HMAC(secret, nonce), so it
needs no server-side storage and dies with the session.

>>> signer = SessionSigner("secret", max_age_s=60)
>>> cookie = signer.issue("key1", "proj1")
>>> signer.read(cookie).project_id
'proj1'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE_NAME = "lowbit_dashboard"
LOGIN_CSRF_COOKIE = "lowbit_dashboard_login"
_MAX_COOKIE_CHARS = 1024


@dataclass(frozen=True)
class DashboardSession:
    """What a valid cookie says: the key that signed in, its project, the nonce behind the CSRF token."""

    key_id: str
    project_id: str
    nonce: str
    issued_at: int


class SessionSigner:
    """Issues and verifies session cookies and CSRF tokens with ``secret`` (the service secret key)."""

    def __init__(self, secret: str, max_age_s: int) -> None:
        # Derive separate keys so a cookie signature can never serve as a CSRF token or vice versa.
        self._cookie_key = hmac.new(secret.encode(), b"dashboard-session", hashlib.sha256).digest()
        self._csrf_key = hmac.new(secret.encode(), b"dashboard-csrf", hashlib.sha256).digest()
        self.max_age_s = max_age_s

    def issue(self, key_id: str, project_id: str, now: float | None = None) -> str:
        """A new cookie value for a sign-in with API key ``key_id`` of ``project_id``."""
        payload = {"k": key_id, "p": project_id, "n": secrets.token_urlsafe(16), "t": int(now or time.time())}
        body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()
        return f"{body}.{self._sign(body)}"

    def read(self, cookie: str | None, now: float | None = None) -> DashboardSession | None:
        """The session in ``cookie``, or None when it is missing, malformed, forged or expired."""
        if not cookie or len(cookie) > _MAX_COOKIE_CHARS or "." not in cookie:
            return None
        body, _, sig = cookie.rpartition(".")
        if not hmac.compare_digest(sig, self._sign(body)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body.encode()))
            session = DashboardSession(str(data["k"]), str(data["p"]), str(data["n"]), int(data["t"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None
        age = (now or time.time()) - session.issued_at
        if not 0 <= age <= self.max_age_s:
            return None
        return session

    def csrf_token(self, nonce: str) -> str:
        """The CSRF token that forms of the session with ``nonce`` must send back."""
        return hmac.new(self._csrf_key, nonce.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, nonce: str, token: str | None) -> bool:
        """Whether ``token`` is the CSRF token of ``nonce`` (constant-time)."""
        return bool(token) and hmac.compare_digest(self.csrf_token(nonce), token or "")

    def _sign(self, body: str) -> str:
        return hmac.new(self._cookie_key, body.encode(), hashlib.sha256).hexdigest()


def new_login_nonce() -> str:
    """A random value for the pre-sign-in CSRF cookie (double-submit: the form echoes it)."""
    return secrets.token_urlsafe(16)
