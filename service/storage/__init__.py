"""Object storage: the ArtifactStore interface and its backends (local directory, S3-compatible).

>>> from service.settings import Settings
>>> store = make_store(Settings(storage="local", local_storage_dir="/tmp/lowbit-doctest"))
"""

from service.storage import local, s3  # noqa: F401  (backends register themselves)
from service.storage.base import (
    ArtifactStore,
    ObjectStat,
    ObjectWriter,
    attempt_artifact_key,
    blob_key,
    check_key,
    job_artifact_key,
    make_store,
    upload_key,
)

__all__ = [
    "ArtifactStore",
    "ObjectStat",
    "ObjectWriter",
    "attempt_artifact_key",
    "blob_key",
    "check_key",
    "job_artifact_key",
    "make_store",
    "upload_key",
]
