"""What the images install: the wheel built from the Docker build context carries every package file.

The Dockerfile copies pyproject.toml, README.md and the package folders into its `source` stage
and runs `pip install .` (not the editable install of .venv), so a data file that pyproject's
package-data misses (a migration, a template, a preset) would be absent only in the images.
This test copies the same paths (as git tracks them) to a temporary folder, builds the wheel
offline there and checks that every tracked file of the packages is in it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.deploy.dockerfile_stages import parse
from tests.deploy.overlays import REPO

PACKAGES = ("core", "service", "worker", "migrations")


def _build_context_paths() -> list[str]:
    source = parse((REPO / "Dockerfile").read_text())["source"]
    return [part for args in source.all("COPY") if "--from=" not in args for part in args.split()[:-1]]


def test_wheel_of_the_build_context_contains_every_tracked_package_file(tmp_path: Path) -> None:
    context = _build_context_paths()
    assert set(PACKAGES) | {"pyproject.toml", "README.md"} <= set(context)
    tracked = subprocess.run(
        ["git", "ls-files", "--", *context], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    src = tmp_path / "src"
    for path in tracked:
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, src / path)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("lowbit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = set(archive.namelist())
    package_files = [p for p in tracked if p.split("/")[0] in PACKAGES]
    assert any(path.startswith("migrations/versions/") for path in package_files)
    missing = sorted(path for path in package_files if path not in packaged)
    assert not missing, f"the images would lack {missing}; add them to [tool.setuptools.package-data]"
