"""The ArtifactStore interface, object keys, and the backend registry.

Keys never come from user-supplied names: blobs are content-addressed
(``blobs/sha256/ab/abcdef...``), job outputs live under ``jobs/<job_id>/<artifact>`` with artifact
names chosen by the worker, and uploads in progress under ``uploads/<upload_id>``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from service.errors import InvalidInputError
from service.settings import Settings

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def check_key(key: str) -> str:
    """``key`` if it is a safe object key (no empty, dot-leading or '..' segments), else InvalidInputError."""
    if len(key) > 300 or not _KEY_RE.match(key) or any(part.startswith(".") for part in key.split("/")):
        raise InvalidInputError(f"invalid object key {key!r}", code="invalid_key")
    return key


def blob_key(sha256: str) -> str:
    """The content-addressed key of a blob: ``blobs/sha256/<first two hex>/<hex>``."""
    if not _SHA_RE.match(sha256):
        raise InvalidInputError("sha256 must be 64 lowercase hex characters", code="invalid_sha256")
    return f"blobs/sha256/{sha256[:2]}/{sha256}"


def job_artifact_key(job_id: str, artifact: str) -> str:
    """The key of a job output (``artifact`` is a worker-chosen file name such as ``model.onnx``)."""
    return check_key(f"jobs/{job_id}/{artifact}")


def attempt_artifact_key(job_id: str, attempt: int, artifact: str) -> str:
    """The key of an output written by attempt ``attempt`` of a job: each attempt writes under its own
    prefix and the artifact rows name the published attempt's keys, so a late attempt never overwrites
    what readers were given."""
    return check_key(f"jobs/{job_id}/attempt-{int(attempt)}/{artifact}")


def upload_key(upload_id: str) -> str:
    """The staging key of an upload in progress."""
    return check_key(f"uploads/{upload_id}")


@dataclass(frozen=True)
class ObjectStat:
    size: int
    etag: str | None = None


class ObjectWriter(ABC):
    """A streaming write into one key; ``write`` takes chunks of any size, memory stays bounded."""

    @abstractmethod
    def write(self, chunk: bytes) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...


class ArtifactStore(ABC):
    """Object storage used by the API and the workers (S3-compatible or a local directory)."""

    @abstractmethod
    def open_writer(self, key: str) -> ObjectWriter:
        """A writer that creates ``key`` on commit; memory stays at one chunk."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` (small objects: reports, metrics)."""
        writer = self.open_writer(key)
        try:
            writer.write(data)
            writer.commit()
        except BaseException:
            writer.abort()
            raise

    def put_stream(self, key: str, chunks: Iterator[bytes]) -> int:
        """Store the concatenated ``chunks`` at ``key``; returns the byte count."""
        writer = self.open_writer(key)
        total = 0
        try:
            for chunk in chunks:
                writer.write(chunk)
                total += len(chunk)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return total

    @abstractmethod
    def get_stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The bytes of ``key`` in chunks; KeyError when missing."""

    @abstractmethod
    def stat(self, key: str) -> ObjectStat | None:
        """Size (and etag) of ``key``, or None when it does not exist."""

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        return self.stat(key) is not None

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it is already gone."""

    @abstractmethod
    def copy(self, src: str, dst: str) -> None:
        """Copy ``src`` to ``dst`` inside the store (server-side where possible)."""

    def move(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst``."""
        self.copy(src, dst)
        self.delete(src)

    @abstractmethod
    def presign_get(
        self, key: str, expires_s: int, filename: str | None = None, inline_type: str | None = None
    ) -> str:
        """A URL that downloads ``key`` with plain HTTP GET until ``expires_s`` seconds from now.

        ``filename``: served as an attachment of that name (a download). ``inline_type``: served with
        that Content-Type and no attachment disposition, so a browser shows it (reports, plots)."""

    @abstractmethod
    def presign_put(self, key: str, expires_s: int) -> str:
        """A URL that accepts one plain HTTP PUT of the object body into ``key``."""

    @abstractmethod
    def create_multipart(self, key: str) -> str:
        """Start a multipart upload into ``key``; returns its upload id."""

    @abstractmethod
    def presign_part(self, key: str, upload_id: str, part_number: int, expires_s: int) -> str:
        """A URL for a plain HTTP PUT of part ``part_number`` (1-based); the response's ETag names the part."""

    @abstractmethod
    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        """Assemble ``parts`` ((number, etag) in order) into ``key``."""

    @abstractmethod
    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop a multipart upload and its parts."""

    @abstractmethod
    def check(self) -> None:
        """Raise StorageError when the store is unreachable (readiness probe)."""


StoreFactory = Callable[[Settings], ArtifactStore]
_BACKENDS: dict[str, StoreFactory] = {}


def register_store(name: str) -> Callable[[StoreFactory], StoreFactory]:
    """Register a backend factory under ``name`` (the value of ``LOWBIT_STORAGE``)."""

    def deco(factory: StoreFactory) -> StoreFactory:
        _BACKENDS[name] = factory
        return factory

    return deco


def make_store(settings: Settings) -> ArtifactStore:
    """The store selected by ``settings.storage``."""
    try:
        factory = _BACKENDS[settings.storage]
    except KeyError:
        raise InvalidInputError(
            f"unknown storage backend {settings.storage!r}; choose one of {', '.join(sorted(_BACKENDS))}"
        ) from None
    return factory(settings)
