"""Zip members read within budgets: sizes and compression from the headers first, then the inflated
bytes streamed one chunk at a time (never inflated whole), for ``.npz`` and ``.pt2`` uploads.

Only stored and deflated members are accepted: zipfile inflates bzip2 and LZMA members without an
output bound per read (a 3 KB bzip2 member inflated to 4 GiB in one read), and numpy and torch write
stored or deflated members only.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

from service.errors import UploadRejectedError
from service.uploads.budgets import UploadBudgets

_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
            zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}  # fmt: skip
MAX_MEMBERS = 100_000


def reject(fmt: str, why: str) -> UploadRejectedError:
    return UploadRejectedError(f"not a valid .{fmt} file: {why}")


def open_zip(path: Path, fmt: str, budgets: UploadBudgets) -> zipfile.ZipFile:
    """The archive, with every member's header checked against ``budgets`` (nothing inflated yet)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise reject(fmt, f"not a zip archive ({exc})") from None
    try:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise reject(fmt, f"{len(infos)} members; accepted: at most {MAX_MEMBERS}")
        total = sum(info.file_size for info in infos)
        if total > budgets.max_file_bytes:
            raise reject(fmt, f"members inflate to {total} bytes; accepted: at most {budgets.max_file_bytes}")
        for info in infos:
            check_member_header(info, fmt, budgets)
    except BaseException:
        zf.close()
        raise
    return zf


def check_member_header(info: zipfile.ZipInfo, fmt: str, budgets: UploadBudgets) -> None:
    """Compression method, declared inflated size and inflation ratio of one member."""
    name = info.filename
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        method = _METHODS.get(info.compress_type, f"method {info.compress_type}")
        raise reject(fmt, f"member {name!r} is compressed with {method}; accepted: stored or deflate members")
    if info.file_size > budgets.max_member_bytes:
        raise reject(
            fmt,
            f"member {name!r} declares {info.file_size} bytes; accepted: at most {budgets.max_member_bytes}",
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if (
        info.compress_type == zipfile.ZIP_DEFLATED
        and info.file_size > 1 << 20
        and ratio > budgets.max_inflation_ratio
    ):
        raise reject(
            fmt,
            f"member {name!r} inflates {ratio:.0f}x ({info.compress_size} -> {info.file_size} bytes); "
            f"accepted: at most {budgets.max_inflation_ratio}x (a zip bomb?)",
        )


def member_chunks(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, fmt: str, budgets: UploadBudgets, skip: int = 0
) -> Iterator[bytes]:
    """The inflated bytes of ``info`` after its first ``skip`` bytes, one chunk at a time; the member
    must hold exactly its declared size (zipfile stops at the declared size and checks the CRC)."""
    seen = 0
    try:
        with zf.open(info) as member:
            if skip:
                member.read(skip)
                seen = skip
            while chunk := member.read(budgets.chunk_bytes):
                seen += len(chunk)
                if seen > info.file_size:  # zipfile already stops at the declared size
                    raise reject(fmt, f"member {info.filename!r} inflates past its declared size")
                yield chunk
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise reject(fmt, f"member {info.filename!r} is corrupt ({exc})") from None
    if seen != info.file_size:
        raise reject(fmt, f"member {info.filename!r} holds {seen} bytes, not the declared {info.file_size}")


def read_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, fmt: str, budgets: UploadBudgets, limit: int
) -> bytes:
    """A small member (a config, an archive of sample inputs) read whole, refused above ``limit`` bytes."""
    if info.file_size > limit:
        raise reject(fmt, f"member {info.filename!r} is {info.file_size} bytes; accepted: at most {limit}")
    return b"".join(member_chunks(zf, info, fmt, budgets))
