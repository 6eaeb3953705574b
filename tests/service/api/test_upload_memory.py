"""A 1 GiB streaming upload through the API keeps the API process's memory flat (RSS growth <= 64 MiB)."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from service.db.repositories import projects
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.settings import Settings
from tests.fixtures.api_process import api_process

GiB = 1024**3
MiB = 1024**2


class _Sink:
    """An unseekable file for zipfile: collects what it writes until drained (zip64 data descriptors)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        out, self.buf = bytes(self.buf), bytearray()
        return out


def npz_stream(data_bytes: int, chunk: int = 1 * MiB) -> Iterator[bytes]:
    """A valid .npz with one float32 array of ``data_bytes`` bytes, generated on the fly (no big buffers)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (data_bytes // 4,)}
    )
    sink = _Sink()
    block = np.arange(chunk // 4, dtype=np.float32).tobytes()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[arg-type]
        with zf.open("x.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            for _ in range(data_bytes // chunk):
                member.write(block)
                yield sink.drain()
        yield sink.drain()
    yield sink.drain()


def test_npz_stream_is_a_valid_npz() -> None:
    data = b"".join(npz_stream(4 * MiB))
    with np.load(io.BytesIO(data)) as npz:
        assert npz["x"].shape == (MiB,) and npz["x"][5] == 5.0


@pytest.mark.slow
def test_one_gib_upload_keeps_rss_flat(tmp_path: Path) -> None:
    """Given the API in its own process, when 1 GiB streams in, its peak RSS grows by at most 64 MiB."""
    env = {
        "LOWBIT_DATABASE_URL": f"sqlite:///{tmp_path / 'lowbit.db'}",
        "LOWBIT_LOCAL_STORAGE_DIR": str(tmp_path / "objects"),
        "LOWBIT_RATE_LIMIT_PER_MINUTE": "0",
        "TMPDIR": str(tmp_path),
    }
    settings = Settings(database_url=env["LOWBIT_DATABASE_URL"])
    from service.db.migrate import upgrade

    upgrade(settings)
    engine = make_engine(settings)
    with session_scope(make_sessionmaker(engine)) as session:
        key = projects.create_api_key(session, projects.create_project(session, "rss"))[1]
    engine.dispose()
    with (
        api_process(env, tmp_path / "api.log") as (url, pid),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as client,
    ):
        # Warm up every code path (imports, first DB connections, checks) with a small upload.
        small = client.post("/v1/datasets", json={"name": "warm", "format": "npz"}).json()
        assert (
            client.put(f"/v1/datasets/{small['id']}/content", content=npz_stream(8 * MiB)).status_code == 200
        )
        proc = psutil.Process(pid)
        baseline = proc.memory_info().rss
        peak = [baseline]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        big = client.post("/v1/datasets", json={"name": "big", "format": "npz"}).json()
        resp = client.put(f"/v1/datasets/{big['id']}/content", content=npz_stream(GiB))
        done.set()
        sampler.join()
        assert resp.status_code == 200, resp.text
        assert resp.json()["size"] > GiB
        growth = (peak[0] - baseline) / MiB
        print(f"RSS baseline {baseline / MiB:.1f} MiB, peak {peak[0] / MiB:.1f} MiB, growth {growth:.1f} MiB")
        assert growth <= 64, f"RSS grew by {growth:.1f} MiB during a 1 GiB upload"
