"""Session cookie signing and CSRF tokens (pure functions)."""

from __future__ import annotations

from service.dashboard.session import SessionSigner


def test_cookie_round_trip_and_expiry() -> None:
    signer = SessionSigner("secret", max_age_s=100)
    cookie = signer.issue("k1", "p1", now=1000)
    found = signer.read(cookie, now=1050)
    assert found is not None and (found.key_id, found.project_id) == ("k1", "p1")
    assert signer.read(cookie, now=1101) is None  # expired
    assert signer.read(cookie, now=900) is None  # issued in the future
    assert SessionSigner("other", 100).read(cookie, now=1050) is None  # another secret


def test_tampering_and_garbage_are_rejected() -> None:
    signer = SessionSigner("secret", max_age_s=100)
    cookie = signer.issue("k1", "p1", now=1000)
    body, sig = cookie.rsplit(".", 1)
    forged = SessionSigner("secret", 100).issue("k2", "p2", now=1000).rsplit(".", 1)[0] + "." + sig
    for bad in (forged, body + "." + sig[::-1], "", "x" * 5000, "no-dot", body + ".", "." + sig):
        assert signer.read(bad, now=1000) is None


def test_csrf_token_is_bound_to_the_session_nonce() -> None:
    signer = SessionSigner("secret", max_age_s=100)
    a = signer.read(signer.issue("k", "p"))
    b = signer.read(signer.issue("k", "p"))
    assert a is not None and b is not None and a.nonce != b.nonce
    assert signer.check_csrf(a.nonce, signer.csrf_token(a.nonce))
    assert not signer.check_csrf(a.nonce, signer.csrf_token(b.nonce))
    assert not signer.check_csrf(a.nonce, "") and not signer.check_csrf(a.nonce, None)
    # A cookie signature is not a valid CSRF token (separately derived keys).
    assert not signer.check_csrf(a.nonce, signer.issue("k", "p").rsplit(".", 1)[1])
