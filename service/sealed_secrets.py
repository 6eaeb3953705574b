"""Secrets that tenants give the service (schedule webhook secrets), encrypted at rest with the server
secret (``LOWBIT_SECRET_KEY``): a database dump or backup alone does not reveal them.

AES-256-GCM with a random nonce; the key is SHA-256 of a purpose label and the server secret. Stored
as ``v1:<urlsafe base64 of nonce + ciphertext + tag>``. Values without the prefix are plaintext stored
by earlier versions and read as they are. The API and the workers must share ``LOWBIT_SECRET_KEY``.

>>> unseal(seal("a-webhook-secret-123", "server"), "server")
'a-webhook-secret-123'
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PREFIX = "v1:"
_PURPOSE = b"lowbit sealed secret v1\x00"


class SealedSecretError(ValueError):
    """A sealed value that this server secret cannot open (another LOWBIT_SECRET_KEY, or tampered)."""


def _key(server_secret: str) -> AESGCM:
    return AESGCM(hashlib.sha256(_PURPOSE + server_secret.encode()).digest())


def seal(plaintext: str, server_secret: str) -> str:
    nonce = os.urandom(12)
    sealed = nonce + _key(server_secret).encrypt(nonce, plaintext.encode(), _PURPOSE)
    return _PREFIX + base64.urlsafe_b64encode(sealed).decode()


def unseal(stored: str, server_secret: str) -> str:
    if not stored.startswith(_PREFIX):
        return stored  # plaintext written before secrets were sealed
    raw = base64.urlsafe_b64decode(stored[len(_PREFIX) :])
    try:
        return _key(server_secret).decrypt(raw[:12], raw[12:], _PURPOSE).decode()
    except (InvalidTag, ValueError) as exc:
        raise SealedSecretError("a sealed secret does not open with this LOWBIT_SECRET_KEY") from exc
