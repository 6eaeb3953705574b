"""Python client of the lowbit API (httpx only; no torch).

>>> client = LowbitClient("http://127.0.0.1:8000", "lb_...")            # doctest: +SKIP
>>> version = client.upload_model("model.onnx")                        # doctest: +SKIP
>>> data = client.upload_dataset("calib.npz")                          # doctest: +SKIP
>>> job = client.submit({"model_id": version["model_id"], "calib_dataset_id": data["id"],
...                      "technique": "ptq"})                          # doctest: +SKIP
>>> client.wait(job["id"])["status"]                                   # doctest: +SKIP
'succeeded'
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from service.client_config import missing_key_message, resolve_client_config
from service.reconnect import (
    RETRYABLE_STATUSES,
    GaveUpReconnecting,
    Reconnector,
    ReconnectPolicy,
    parse_retry_after,
)

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
MODEL_SUFFIXES = {".onnx": "onnx", ".pt2": "pt2"}
DATASET_SUFFIXES = {".npz": "npz", ".safetensors": "safetensors"}


class ClientError(Exception):
    """The API answered with an error (``status``, ``code``, ``message``) or could not be reached."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})" if status else message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after  # seconds, from the answer's Retry-After header

    @property
    def transient(self) -> bool:
        """The API was unreachable or said "not now" (429/502/503/504): worth retrying later."""
        return (self.status == 0 and self.code == "unreachable") or self.status in RETRYABLE_STATUSES


def _file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


def file_sha256(path: Path) -> str:
    """sha256 hex of a file, read in chunks."""
    digest = hashlib.sha256()
    for chunk in _file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def embedded_defaults(data_dir: str | Path | None = None) -> tuple[str | None, str | None]:
    """(url, api key) that a local ``lowbit serve`` left in its data directory, or None for each missing.

    The directory is ``data_dir``, else LOWBIT_DATA_DIR, else ``./.lowbit`` (``lowbit serve``'s default);
    it holds ``url`` while the server runs and ``api_key`` (mode 0600) from its first start.
    """
    root = Path(data_dir or os.environ.get("LOWBIT_DATA_DIR") or ".lowbit")

    def read(name: str) -> str | None:
        try:
            return (root / name).read_text().strip() or None
        except OSError:
            return None

    return read("url"), read("api_key")


def _tls_context(url: str) -> ssl.SSLContext | bool:
    """TLS verification for a client of ``url``: the default (certifi's CA bundle) for https.

    A plain-http API never does a TLS handshake on this client (every call is a path under the base URL;
    artifact downloads use their own client), yet httpx would parse the whole CA bundle when the client
    is built: about 0.05 s of every `lowbit jobs` start. For http URLs the client gets a context with no
    CA loaded instead, which still requires certificates and host names, so a handshake that did
    happen would fail closed rather than go unverified.
    """
    if url.lower().startswith("https://"):
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class LowbitClient:
    """A session with one lowbit API as one project (its API key).

    Defaults: each of URL and key from the argument, else LOWBIT_URL / LOWBIT_API_KEY, else what a local
    ``lowbit serve`` stored in its data directory, else ``http://127.0.0.1:8000`` (no key); see
    service/client_config.py. ``config`` says where each came from; errors quote it.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = resolve_client_config(url, api_key)
        self.url = self.config.url
        if not self.config.api_key:
            raise ClientError(0, "no_api_key", missing_key_message(self.config))
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.config.api_key}"},
            timeout=timeout,
            transport=transport,
            verify=_tls_context(self.url),
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LowbitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; returns the decoded JSON or raises ClientError."""
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(0, "unreachable", f"cannot reach {self.config.describe()}: {exc}") from exc
        if resp.status_code >= 400:
            raise self._error_of(resp)
        return resp.json() if resp.content else None

    def _error_of(self, resp: httpx.Response) -> ClientError:
        """The answer's error, with what the user can check: a URL that is not the API, a refused key."""
        err = _answer_error(resp)
        if resp.status_code == 404 and (err.code == "http_error" or err.message == "Not Found"):
            # No such route (not a missing resource): the URL is not lowbit's base URL.
            return ClientError(404, "no_api", f"no lowbit API at {self.config.describe()}: {resp.request.url} "
                               "is not an API endpoint; give the server's base URL (http://HOST:PORT)")  # fmt: skip
        if resp.status_code == 401:
            message = f"{err.message}; the API key from {self.config.key_source} was refused by {self.config.describe()}"
            return ClientError(401, err.code, message, err.retry_after)
        return err

    def _create(self, path: str, body: dict[str, Any], idempotency_key: str | None = None) -> Any:
        # Every create carries a key, so a retry after a lost response never creates a duplicate.
        import uuid  # here, not at module level: only submits need it, and it costs every CLI start

        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return self.request("POST", path, json=body, headers=headers)

    # -- models and datasets ---------------------------------------------------------------------
    def find_model(self, name: str) -> dict[str, Any] | None:
        """The model named ``name`` or None."""
        page = self.request("GET", "/v1/models", params={"name": name})
        return page["items"][0] if page["items"] else None

    def model_versions(self, model_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.request("GET", f"/v1/models/{model_id}/versions")
        return out

    def upload_model(self, path: str | Path, name: str | None = None) -> dict[str, Any]:
        """A ready version of model ``name`` (default: the file stem) holding the bytes of ``path``
        (.onnx or .pt2): an existing version with the same sha256 is reused, else a new version is
        streamed through the API. A model's versions keep one format (the service answers 409
        ``format_mismatch`` for a file of another format: give it another name)."""
        path = Path(path)
        fmt = MODEL_SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise ClientError(0, "bad_format", f"{path}: model files must end in {', '.join(MODEL_SUFFIXES)}")
        sha256 = file_sha256(path)
        name = name or path.stem
        model = self.find_model(name)
        if model is not None:
            same = [
                v
                for v in self.model_versions(model["id"])
                if v["sha256"] == sha256 and v["status"] == "ready"
            ]
            if same:
                return max(same, key=lambda v: int(v["version"]))
        else:
            model = self._create("/v1/models", {"name": name})
        version = self._create(f"/v1/models/{model['id']}/versions", {"format": fmt})
        self._stream(f"/v1/models/{model['id']}/versions/{version['version']}/content", path, sha256)
        out: dict[str, Any] = self.request("GET", f"/v1/models/{model['id']}/versions/{version['version']}")
        return out

    def upload_dataset(
        self, path: str | Path, name: str | None = None, kind: str = "calibration"
    ) -> dict[str, Any]:
        """A ready dataset of this ``kind`` holding the bytes of ``path`` (.npz or .safetensors): an
        existing one with the same sha256 is reused, else a new one is streamed through the API."""
        path = Path(path)
        fmt = DATASET_SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise ClientError(
                0, "bad_format", f"{path}: data files must end in {', '.join(DATASET_SUFFIXES)}"
            )
        sha256 = file_sha256(path)
        query = {"sha256": sha256, "kind": kind, "format": fmt, "status": "ready", "limit": 1}
        found = self.request("GET", "/v1/datasets", params=query)["items"]
        if found:
            existing: dict[str, Any] = found[0]
            return existing
        dataset = self._create("/v1/datasets", {"name": name or path.stem, "kind": kind, "format": fmt})
        self._stream(f"/v1/datasets/{dataset['id']}/content", path, sha256)
        out: dict[str, Any] = self.request("GET", f"/v1/datasets/{dataset['id']}")
        return out

    def _stream(self, url: str, path: Path, sha256: str | None = None) -> None:
        headers = {
            "X-Content-SHA256": sha256 or file_sha256(path),
            "Content-Length": str(path.stat().st_size),
        }
        self.request("PUT", url, content=_file_chunks(path), headers=headers)

    # -- jobs ------------------------------------------------------------------------------------
    def validate_job(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Dry run: the service checks ``spec`` (ids of inputs not yet uploaded may be left out) and
        creates nothing; raises ClientError (HTTP 422) saying what is wrong."""
        out: dict[str, Any] = self.request("POST", "/v1/jobs/validate", json=spec)
        return out

    def paged(self, path: str, limit: int = 50, **params: Any) -> list[dict[str, Any]]:
        """Up to ``limit`` items of a cursor-paginated list endpoint."""
        items: list[dict[str, Any]] = []
        cursor = None
        while len(items) < limit:
            query = {k: v for k, v in params.items() if v is not None}
            query["limit"] = min(200, limit - len(items))
            if cursor:
                query["cursor"] = cursor
            page = self.request("GET", path, params=query)
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return items

    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """Create a job from a spec (see JobSpec in the API docs)."""
        out: dict[str, Any] = self._create("/v1/jobs", spec, idempotency_key)
        return out

    def job(self, job_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", f"/v1/jobs/{job_id}")
        return out

    def jobs(self, limit: int = 50, **filters: Any) -> list[dict[str, Any]]:
        """Up to ``limit`` jobs, newest first (follows cursors)."""
        items: list[dict[str, Any]] = []
        cursor = None
        while len(items) < limit:
            params = {k: v for k, v in filters.items() if v is not None}
            params["limit"] = min(200, limit - len(items))
            if cursor:
                params["cursor"] = cursor
            page = self.request("GET", "/v1/jobs", params=params)
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        return items

    def cancel(self, job_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self.request("POST", f"/v1/jobs/{job_id}/cancel")
        return out

    def rerun(self, job_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self._create(f"/v1/jobs/{job_id}/rerun", {})
        return out

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.request("GET", f"/v1/jobs/{job_id}/artifacts")
        return out

    def logs(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.request("GET", f"/v1/jobs/{job_id}/logs", params={"after": after})
        return out

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's server-sent events as (event name, data) until the stream ends."""
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise _answer_error(resp)
            name = "message"
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    yield name, json.loads(line[6:])
                    name = "message"

    def wait(
        self,
        job_id: str,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        timeout_s: float | None = None,
        on_reconnect: Callable[[str, float], None] | None = None,
        reconnect: ReconnectPolicy | None = None,
    ) -> dict[str, Any]:
        """Follow the job until it is succeeded, failed or cancelled; ``on_update`` gets each progress event.

        An unreachable API (restart), 502/503/504 and 429 are retried with backoff (``reconnect``,
        default from LOWBIT_RECONNECT_S; Retry-After honoured); ``on_reconnect(reason, delay_s)`` is
        told before each sleep. Other errors, and failures in a row past the budget, raise ClientError.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        backoff = Reconnector(reconnect or ReconnectPolicy.from_env())
        while True:
            try:
                for name, data in self.events(job_id):
                    backoff.reset()
                    if on_update is not None and name == "progress":
                        on_update(data)
                    if deadline is not None and time.monotonic() > deadline:
                        raise ClientError(0, "timeout", f"job {job_id} not finished after {timeout_s} s")
                job = self.job(job_id)
            except (httpx.HTTPError, ClientError) as exc:
                if isinstance(exc, ClientError) and not exc.transient:
                    raise
                if deadline is not None and time.monotonic() > deadline:
                    raise ClientError(0, "timeout", f"job {job_id} not finished after {timeout_s} s") from exc
                reason = _reason(exc)
                retry_after = exc.retry_after if isinstance(exc, ClientError) else None
                try:
                    delay = backoff.next_delay(retry_after, reason)
                except GaveUpReconnecting as gave_up:
                    raise ClientError(0, "unreachable", f"{self.url}: {gave_up}") from exc
                if on_reconnect is not None:
                    on_reconnect(reason, delay)
                time.sleep(delay)
                continue
            backoff.reset()
            if job["status"] in TERMINAL:
                return job

    def download(self, job_id: str, dest: str | Path) -> list[Path]:
        """Download every artifact of the job into ``dest`` through its presigned URL."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        paths = []
        for art in self.artifacts(job_id):
            target = dest / Path(art["name"]).name  # never trust a path from the server
            with httpx.stream("GET", art["url"], timeout=None) as resp:
                if resp.status_code != 200:
                    raise ClientError(
                        resp.status_code, "download_failed", f"download of {art['name']} failed"
                    )
                with target.open("wb") as fh:
                    for chunk in resp.iter_bytes(1 << 20):
                        fh.write(chunk)
            paths.append(target)
        return paths


def _answer_error(resp: httpx.Response) -> ClientError:
    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    try:
        err = resp.json()["error"]
        return ClientError(resp.status_code, err["code"], err["message"], retry_after)
    except (ValueError, KeyError, TypeError):
        return ClientError(resp.status_code, "http_error", resp.text[:300], retry_after)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return f"HTTP {exc.status} {exc.code}" if exc.status else exc.message
    return f"{type(exc).__name__}: {exc}"
