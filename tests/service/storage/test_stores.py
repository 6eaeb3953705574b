"""Both ArtifactStore backends: streaming writes, multipart, copies, and signed URLs over plain HTTP."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.errors import AuthError, InvalidInputError
from service.settings import Settings
from service.storage import ArtifactStore, blob_key, check_key, make_store
from service.storage.local import LocalArtifactStore
from tests.fixtures.seaweedfs import SeaweedS3
from tests.service.conftest import s3_settings

MiB = 1024 * 1024


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "s3":
        server: SeaweedS3 = request.getfixturevalue("seaweed")
        return make_store(Settings(**s3_settings(server)))  # type: ignore[arg-type]
    return make_store(Settings(storage="local", local_storage_dir=str(tmp_path / "objects")))


def _chunks(n: int, size: int) -> Iterator[bytes]:
    for i in range(n):
        yield bytes([i % 251]) * size


def test_streamed_multipart_write_round_trips(store: ArtifactStore) -> None:
    """Given three 5 MiB chunks, the stored object is their concatenation (S3 turns them into parts)."""
    key = f"jobs/test/{os.urandom(4).hex()}.bin"
    expected = b"".join(_chunks(3, 5 * MiB))
    assert store.put_stream(key, _chunks(3, 5 * MiB)) == len(expected)
    stat = store.stat(key)
    assert stat is not None and stat.size == len(expected)
    assert hashlib.sha256(b"".join(store.get_stream(key))).digest() == hashlib.sha256(expected).digest()
    store.copy(key, key + ".copy")
    copied = store.stat(key + ".copy")
    assert copied is not None and copied.size == len(expected)
    store.delete(key)
    store.delete(key)  # deleting twice is fine
    assert not store.exists(key)
    with pytest.raises(KeyError):
        next(iter(store.get_stream(key)))


def test_small_put_and_missing_stat(store: ArtifactStore) -> None:
    store.put_bytes("jobs/x/metrics.json", b"{}")
    assert b"".join(store.get_stream("jobs/x/metrics.json")) == b"{}"
    assert store.stat("jobs/x/none") is None
    store.check()


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "a/../../b", "/abs", "a//b", ".hidden/x", "a/.git", "", "a\\b"]
)
def test_unsafe_keys_refused(key: str) -> None:
    with pytest.raises(InvalidInputError):
        check_key(key)


def test_blob_key_is_content_addressed() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert blob_key(digest) == f"blobs/sha256/{digest[:2]}/{digest}"
    with pytest.raises(InvalidInputError):
        blob_key("../" + digest[3:])


def test_s3_presigned_put_get_with_plain_http(seaweed: SeaweedS3) -> None:
    store = make_store(Settings(**s3_settings(seaweed)))  # type: ignore[arg-type]
    key = f"uploads/{os.urandom(6).hex()}"
    body = os.urandom(100_000)
    put = httpx.put(store.presign_put(key, 60), content=body)
    assert put.status_code == 200, put.text
    got = httpx.get(store.presign_get(key, 60))
    assert got.status_code == 200 and got.content == body
    # Anonymous access is refused: S3 auth is on.
    assert httpx.get(f"{seaweed.endpoint}/{seaweed.bucket}/{key}").status_code in (401, 403)


def test_s3_inline_and_download_urls(seaweed: SeaweedS3) -> None:
    """A view URL serves a report as HTML with no attachment disposition (the browser shows it); a
    download URL names the file as an attachment."""
    store = make_store(Settings(**s3_settings(seaweed)))  # type: ignore[arg-type]
    key = f"jobs/{os.urandom(6).hex()}/report.html"
    store.put_bytes(key, b"<!doctype html><title>r</title>")
    shown = httpx.get(store.presign_get(key, 60, inline_type="text/html; charset=utf-8"))
    assert shown.status_code == 200 and shown.headers["content-type"].startswith("text/html")
    assert "attachment" not in shown.headers.get("content-disposition", "")
    saved = httpx.get(store.presign_get(key, 60, filename="report.html"))
    assert saved.headers["content-disposition"] == 'attachment; filename="report.html"'


def test_s3_tampered_and_expired_urls_refused(seaweed: SeaweedS3) -> None:
    store = make_store(Settings(**s3_settings(seaweed)))  # type: ignore[arg-type]
    key = f"uploads/{os.urandom(6).hex()}"
    store.put_bytes(key, b"secret")
    url = store.presign_get(key, 60)
    other = f"uploads/{os.urandom(6).hex()}"
    store.put_bytes(other, b"other")
    assert httpx.get(url.replace(key, other)).status_code == 403
    sig_at = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    flipped = url[:sig_at] + ("0" if url[sig_at] != "0" else "1") + url[sig_at + 1 :]
    assert httpx.get(flipped).status_code == 403
    short = store.presign_get(key, 1)
    time.sleep(2.1)
    assert httpx.get(short).status_code == 403


def test_s3_presigned_multipart_parts(seaweed: SeaweedS3) -> None:
    store = make_store(Settings(**s3_settings(seaweed)))  # type: ignore[arg-type]
    key = f"uploads/{os.urandom(6).hex()}"
    upload_id = store.create_multipart(key)
    parts = [os.urandom(5 * MiB), os.urandom(1000)]
    etags = []
    for number, data in enumerate(parts, start=1):
        resp = httpx.put(store.presign_part(key, upload_id, number, 60), content=data)
        assert resp.status_code == 200, resp.text
        etags.append((number, resp.headers["ETag"]))
    store.complete_multipart(key, upload_id, etags)
    assert b"".join(store.get_stream(key)) == b"".join(parts)


def test_local_signatures(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path, "http://api", "k1")
    exp = int(time.time()) + 60
    sig = store.sign("get", "jobs/a/b", exp)
    store.verify("get", "jobs/a/b", str(exp), sig)
    with pytest.raises(AuthError, match="does not match"):
        store.verify("get", "jobs/a/c", str(exp), sig)
    with pytest.raises(AuthError, match="does not match"):
        store.verify("put", "jobs/a/b", str(exp), sig)
    with pytest.raises(AuthError, match="does not match"):
        LocalArtifactStore(tmp_path, "http://api", "k2").verify("get", "jobs/a/b", str(exp), sig)
    past = int(time.time()) - 1
    with pytest.raises(AuthError, match="expired"):
        store.verify("get", "jobs/a/b", str(past), store.sign("get", "jobs/a/b", past))


def test_local_multipart_checks_etags(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path, "http://api", "k")
    upload_id = store.create_multipart("uploads/u1")
    e1 = store.write_part(upload_id, 1, iter([b"ab", b"c"]))
    e2 = store.write_part(upload_id, 2, iter([b"de"]))
    with pytest.raises(InvalidInputError, match="ETag"):
        store.complete_multipart("uploads/u1", upload_id, [(1, e2), (2, e1)])
    store.complete_multipart("uploads/u1", upload_id, [(1, e1), (2, e2)])
    assert b"".join(store.get_stream("uploads/u1")) == b"abcde"
