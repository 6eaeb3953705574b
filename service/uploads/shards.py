"""Shards of sharded training datasets: the sample count of a checked shard, read from its headers
(no array is loaded), and the rule that every array of a shard shares that leading dimension.

Runs after service.uploads.checks.check_file accepted the file, so the headers are known to parse.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np

from service.errors import UploadRejectedError


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as member:
                version = np.lib.format.read_magic(member)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shapes[info.filename[:-4]] = tuple(read(member, max_header_size=10_000)[0])
    return shapes


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def shard_samples(fmt: str, path: Path) -> int:
    """The common leading dimension of every array in the shard; UploadRejectedError otherwise."""
    shapes = _npz_shapes(path) if fmt == "npz" else _safetensors_shapes(path)
    leading = {name: (shape[0] if shape else 0) for name, shape in shapes.items()}
    counts = set(leading.values())
    if len(counts) != 1 or 0 in counts:
        raise UploadRejectedError(
            f"a training shard needs every array to have the same non-zero leading (samples) dimension; got {leading}"
        )
    return counts.pop()
