"""Object-storage calls of the worker, retried with backoff (an S3 outage of a few seconds is
absorbed; a longer one ends in a clear InfrastructureError naming the object and the budget)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from service.errors import StorageError
from service.storage import ArtifactStore
from worker.retry import retry_call
from worker.settings import WorkerSettings


def download(store: ArtifactStore, key: str, dest: Path, wsettings: WorkerSettings) -> Path:
    """Copy object ``key`` to ``dest`` (rewritten whole on each retry)."""

    def attempt() -> Path:
        with dest.open("wb") as out:
            for chunk in store.get_stream(key):
                out.write(chunk)
        return dest

    return retry_call(
        attempt,
        what=f"object storage download of {key}",
        retry_on=(StorageError, OSError),
        total_s=wsettings.storage_retry_s,
        base_s=wsettings.retry_base_s,
    )


def upload(
    store: ArtifactStore, key: str, src: Path, wsettings: WorkerSettings, total_s: float | None = None
) -> tuple[int, str]:
    """Store file ``src`` at ``key``; returns (size, sha256). Retried for ``total_s`` (default: the
    storage budget; results pass the longer ``results_retry_s``)."""
    digest = hashlib.sha256(src.read_bytes()).hexdigest()

    def chunks() -> object:
        with src.open("rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    size = retry_call(
        lambda: store.put_stream(key, chunks()),  # type: ignore[arg-type]
        what=f"object storage upload of {key}",
        retry_on=(StorageError, OSError),
        total_s=wsettings.storage_retry_s if total_s is None else total_s,
        base_s=wsettings.retry_base_s,
    )
    return size, digest


def put_bytes(store: ArtifactStore, key: str, data: bytes, wsettings: WorkerSettings) -> None:
    """Store small ``data`` at ``key`` (checkpoint manifests, caches)."""
    retry_call(
        lambda: store.put_bytes(key, data),
        what=f"object storage write of {key}",
        retry_on=(StorageError, OSError),
        total_s=wsettings.storage_retry_s,
        base_s=wsettings.retry_base_s,
    )


def get_bytes(store: ArtifactStore, key: str, wsettings: WorkerSettings) -> bytes | None:
    """The bytes of ``key``, or None when it does not exist."""

    def attempt() -> bytes | None:
        if store.stat(key) is None:
            return None
        return b"".join(store.get_stream(key))

    return retry_call(
        attempt,
        what=f"object storage read of {key}",
        retry_on=(StorageError, OSError),
        total_s=wsettings.storage_retry_s,
        base_s=wsettings.retry_base_s,
    )
