"""S3-compatible ArtifactStore (AWS, MinIO, SeaweedFS) via boto3.

Path-style addressing and ``when_required`` checksums work with every S3-compatible server
(boto3 1.36+'s default checksums break some). Presigned URLs are signed by a second client
configured with the public endpoint, because SigV4 signs the host the client will reach.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.errors import InvalidInputError, StorageError
from service.settings import Settings
from service.storage.base import ArtifactStore, ObjectStat, ObjectWriter, check_key, register_store


def _client(endpoint: str | None, settings: Settings) -> Any:
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=32,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name=settings.s3_region,
        config=config,
    )


class _MultipartWriter(ObjectWriter):
    """Buffers writes into parts of PART_BYTES (S3 needs >= 5 MiB per part except the last), so memory
    stays at one part; an object smaller than one part is sent with a single PUT."""

    PART_BYTES = 8 * 1024 * 1024

    def __init__(self, store: S3ArtifactStore, key: str) -> None:
        self._store, self._key = store, key
        self._upload_id: str | None = None
        self._parts: list[tuple[int, str]] = []
        self._buffer = bytearray()

    def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        while len(self._buffer) >= self.PART_BYTES:
            part = bytes(self._buffer[: self.PART_BYTES])
            del self._buffer[: self.PART_BYTES]
            self._send(part)

    def _send(self, chunk: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = self._store.create_multipart(self._key)
        number = len(self._parts) + 1
        resp = self._store._call(
            "upload_part", Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=chunk
        )
        self._parts.append((number, resp["ETag"]))

    def commit(self) -> None:
        if self._upload_id is None:
            self._store._call("put_object", Key=self._key, Body=bytes(self._buffer))
        else:
            if self._buffer:
                self._send(bytes(self._buffer))
            self._store.complete_multipart(self._key, self._upload_id, self._parts)
        self._buffer = bytearray()

    def abort(self) -> None:
        self._buffer = bytearray()
        if self._upload_id is not None:
            self._store.abort_multipart(self._key, self._upload_id)


class S3ArtifactStore(ArtifactStore):
    """Objects in one bucket of an S3-compatible server."""

    def __init__(self, settings: Settings) -> None:
        if not settings.s3_endpoint and not settings.s3_access_key:
            raise InvalidInputError("storage 's3' needs LOWBIT_S3_ENDPOINT or AWS credentials")
        self.bucket = settings.s3_bucket
        self.client = _client(settings.s3_endpoint, settings)
        public = settings.s3_public_endpoint or settings.s3_endpoint
        self.presigner = self.client if public == settings.s3_endpoint else _client(public, settings)

    def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, op)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise KeyError(kwargs.get("Key")) from exc
            raise StorageError(f"object store {op} failed: {code or exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"object store unreachable during {op}: {exc}") from exc

    def open_writer(self, key: str) -> ObjectWriter:
        return _MultipartWriter(self, check_key(key))

    def get_stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        body = self._call("get_object", Key=check_key(key))["Body"]
        return iter(body.iter_chunks(chunk_size))

    def stat(self, key: str) -> ObjectStat | None:
        try:
            head = self._call("head_object", Key=check_key(key))
        except KeyError:
            return None
        return ObjectStat(size=int(head["ContentLength"]), etag=head.get("ETag"))

    def delete(self, key: str) -> None:
        with contextlib.suppress(KeyError):
            self._call("delete_object", Key=check_key(key))

    def copy(self, src: str, dst: str) -> None:
        try:
            # The managed copy switches to multipart copy for objects over its threshold (> 5 GiB safe).
            self.client.copy({"Bucket": self.bucket, "Key": check_key(src)}, self.bucket, check_key(dst))
        except ClientError as exc:
            raise StorageError(f"object store copy failed: {exc}") from exc

    def presign_get(
        self, key: str, expires_s: int, filename: str | None = None, inline_type: str | None = None
    ) -> str:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": check_key(key)}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        elif inline_type:  # objects are stored without a type: S3 would answer octet-stream (a download)
            params["ResponseContentType"] = inline_type
            params["ResponseContentDisposition"] = "inline"
        return str(self.presigner.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s))

    def presign_put(self, key: str, expires_s: int) -> str:
        params = {"Bucket": self.bucket, "Key": check_key(key)}
        return str(self.presigner.generate_presigned_url("put_object", Params=params, ExpiresIn=expires_s))

    def create_multipart(self, key: str) -> str:
        return str(self._call("create_multipart_upload", Key=check_key(key))["UploadId"])

    def presign_part(self, key: str, upload_id: str, part_number: int, expires_s: int) -> str:
        params = {
            "Bucket": self.bucket,
            "Key": check_key(key),
            "UploadId": upload_id,
            "PartNumber": part_number,
        }
        return str(self.presigner.generate_presigned_url("upload_part", Params=params, ExpiresIn=expires_s))

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        self._call(
            "complete_multipart_upload",
            Key=check_key(key),
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]},
        )

    def abort_multipart(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(KeyError, StorageError):
            self._call("abort_multipart_upload", Key=check_key(key), UploadId=upload_id)

    def check(self) -> None:
        self._call("head_bucket")


@register_store("s3")
def _make_s3(settings: Settings) -> ArtifactStore:
    return S3ArtifactStore(settings)
