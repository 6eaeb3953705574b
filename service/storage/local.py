"""Local-directory ArtifactStore for the embedded mode; its URLs are HMAC-signed and served by the API.

A signed URL is ``{public_url}/v1/objects/{key}?op=...&exp=...&sig=...`` where ``sig`` is
HMAC-SHA256(secret_key, op, key, exp, extra). The API's objects route verifies it; a changed key,
op or expiry, or a time after ``exp``, is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

from service.errors import AuthError, InvalidInputError, NotFoundError, StorageError
from service.settings import Settings
from service.storage.base import ArtifactStore, ObjectStat, ObjectWriter, check_key, register_store


def _private_file(path: Path) -> io.BufferedWriter:
    """``path`` opened for writing with mode 0600 whatever the umask: objects hold every project's data."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


class _FileWriter(ObjectWriter):
    def __init__(self, tmp: Path, final: Path) -> None:
        self._tmp, self._final = tmp, final
        self._fh = _private_file(tmp)

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)

    def commit(self) -> None:
        self._fh.close()
        self._final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, self._final)  # atomic: readers never see half a file

    def abort(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)


class LocalArtifactStore(ArtifactStore):
    """Objects as files under ``root``; URL signatures with ``secret`` for ``public_url``."""

    def __init__(self, root: str | Path, public_url: str, secret: str) -> None:
        self.root = Path(root).resolve()
        self.public_url = public_url.rstrip("/")
        self._secret = secret.encode()
        (self.root / ".tmp").mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)  # other users of the host cannot reach any project's objects

    # -- paths -----------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidInputError(f"invalid object key {key!r}", code="invalid_key")
        return path

    def local_path(self, key: str) -> Path:
        """The file that holds ``key`` (for the API's signed-URL route)."""
        return self._path(key)

    def _tmp(self) -> Path:
        return self.root / ".tmp" / secrets.token_hex(12)

    def _parts_dir(self, upload_id: str) -> Path:
        if not upload_id.isalnum():
            raise InvalidInputError("invalid multipart upload id", code="invalid_upload_id")
        return self.root / ".multipart" / upload_id

    # -- objects ---------------------------------------------------------------------------------
    def open_writer(self, key: str) -> ObjectWriter:
        return _FileWriter(self._tmp(), self._path(key))

    def get_stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise KeyError(key)

        def gen() -> Iterator[bytes]:
            with path.open("rb") as fh:
                while chunk := fh.read(chunk_size):
                    yield chunk

        return gen()

    def stat(self, key: str) -> ObjectStat | None:
        path = self._path(key)
        return ObjectStat(size=path.stat().st_size) if path.is_file() else None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def copy(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)
        if not source.is_file():
            raise KeyError(src)
        tmp = self._tmp()
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o600)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)

    def move(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)

    # -- signed URLs -----------------------------------------------------------------------------
    def sign(self, op: str, key: str, exp: int, extra: str = "") -> str:
        """The HMAC signature of one URL (op, key, expiry, extra parameters)."""
        msg = f"{op}\n{key}\n{exp}\n{extra}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def verify(self, op: str, key: str, exp: str, sig: str, extra: str = "") -> None:
        """Raise AuthError unless ``sig`` signs (op, key, exp, extra) and ``exp`` is in the future."""
        try:
            exp_i = int(exp)
        except ValueError:
            raise AuthError("invalid signed URL: bad expiry", code="invalid_signature") from None
        if not hmac.compare_digest(self.sign(op, key, exp_i, extra), sig):
            raise AuthError("invalid signed URL: signature does not match", code="invalid_signature")
        if exp_i < time.time():
            raise AuthError("signed URL expired; ask the API for a new one", code="url_expired")

    def _url(self, op: str, key: str, expires_s: int, **params: str) -> str:
        exp = int(time.time()) + expires_s
        extra = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        query = {"op": op, "exp": str(exp), **params, "sig": self.sign(op, key, exp, extra)}
        return f"{self.public_url}/v1/objects/{quote(check_key(key))}?{urlencode(query)}"

    def presign_get(
        self, key: str, expires_s: int, filename: str | None = None, inline_type: str | None = None
    ) -> str:
        if inline_type and not filename:
            return self._url("get", key, expires_s, inline=inline_type)
        return self._url("get", key, expires_s)

    def presign_put(self, key: str, expires_s: int) -> str:
        return self._url("put", key, expires_s)

    # -- multipart -------------------------------------------------------------------------------
    def create_multipart(self, key: str) -> str:
        check_key(key)
        upload_id = secrets.token_hex(16)
        self._parts_dir(upload_id).mkdir(parents=True)
        return upload_id

    def presign_part(self, key: str, upload_id: str, part_number: int, expires_s: int) -> str:
        return self._url("part", key, expires_s, part=str(part_number), upload_id=upload_id)

    def write_part(self, upload_id: str, part_number: int, chunks: Iterator[bytes]) -> str:
        """Store one part (served by the API's objects route); returns its ETag."""
        parts = self._parts_dir(upload_id)
        if not parts.is_dir():
            raise NotFoundError("unknown multipart upload")
        digest = hashlib.md5(usedforsecurity=False)
        tmp = self._tmp()
        with _private_file(tmp) as fh:
            for chunk in chunks:
                digest.update(chunk)
                fh.write(chunk)
        os.replace(tmp, parts / f"{part_number:05d}")
        return f'"{digest.hexdigest()}"'

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        folder = self._parts_dir(upload_id)
        writer = self.open_writer(key)
        try:
            for number, etag in parts:
                path = folder / f"{number:05d}"
                if not path.is_file():
                    raise InvalidInputError(f"part {number} was never uploaded", code="missing_part")
                digest = hashlib.md5(usedforsecurity=False)
                with path.open("rb") as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
                        writer.write(chunk)
                if etag.strip('"') != digest.hexdigest():
                    raise InvalidInputError(f"part {number}: ETag does not match", code="bad_part_etag")
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        shutil.rmtree(folder, ignore_errors=True)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        shutil.rmtree(self._parts_dir(upload_id), ignore_errors=True)

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"local store {self.root} is not writable")


@register_store("local")
def _make_local(settings: Settings) -> ArtifactStore:
    return LocalArtifactStore(settings.local_storage_dir, settings.public_url, settings.secret_key)
