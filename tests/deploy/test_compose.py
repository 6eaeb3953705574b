"""docker-compose.yml, validated without a Docker engine.

The file is interpolated and normalized by the real Compose CLI (`docker-compose config`, Debian's
docker-compose installed by scripts/system-deps.sh, or the `docker compose` plugin), with no
variables set, as on a fresh machine; the result is also parsed by the compose-spec package (a strict
parser of the Compose specification: unknown keys, bad durations, unknown depends_on conditions are
errors). Then lowbit's own rules: start-up ordering by health, one-shots, the GPU profile, named
volumes and settings names.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

from tests.deploy.dockerfile_stages import parse
from tests.deploy.overlays import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
LOWBIT = ("migrate", "api", "worker", "worker-gpu", "beat")
ONE_SHOTS = ("migrate", "minio-init")
_OUR_VARIABLES = ("LOWBIT_", "POSTGRES_", "MINIO_")


@functools.cache
def _compose_cli() -> tuple[str, ...]:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return ("docker", "compose")
    cli = shutil.which("docker-compose")
    assert cli is not None, "no Compose CLI on PATH: run scripts/system-deps.sh (Debian docker-compose)"
    return (cli,)


# Each Compose v1 call costs ~4 s of CPU here: one result per distinct argument list, shared by the
# tests that read it (callers never mutate the result; they parse its stdout).
@functools.cache
def compose_config(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose -f docker-compose.yml ARGS config` with only ``variables`` of ours set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OUR_VARIABLES)}
    return subprocess.run(
        [*_compose_cli(), "-f", str(COMPOSE_FILE), *args, "config"],
        env={**env, **variables}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


_rendered = compose_config("--profile", "gpu")
assert _rendered.returncode == 0, _rendered.stderr
COMPOSE: dict[str, Any] = yaml.safe_load(_rendered.stdout)
SERVICES: dict[str, Any] = COMPOSE["services"]


def test_compose_spec_parser_accepts_the_file() -> None:
    parsed = PyCompose.from_yaml(yaml.safe_dump(COMPOSE))
    assert set(parsed.service_names()) == set(SERVICES)


@pytest.mark.parametrize(
    ("service", "change"),
    [("api", {"restrat": "always"}), ("api", {"depends_on": {"redis": {"condition": "service_ready"}}})],
    ids=["unknown-key", "unknown-condition"],
)
def test_compose_spec_parser_rejects_broken_services(service: str, change: dict[str, Any]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(COMPOSE))
    broken["services"][service].update(change)
    with pytest.raises(ValueError):
        PyCompose.from_yaml(yaml.safe_dump(broken))


@pytest.mark.parametrize("profile", [(), ("--profile", "gpu")], ids=["default", "gpu"])
def test_compose_cli_validates_the_file(profile: tuple[str, ...]) -> None:
    result = compose_config(*profile)
    assert result.returncode == 0, result.stderr


def test_start_up_waits_for_health_and_one_shots() -> None:
    dockerfile = parse((REPO / "Dockerfile").read_text())
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            target = SERVICES[dependency]
            if condition["condition"] == "service_healthy":
                has_check = "test" in target.get("healthcheck", {})
                built_check = "build" in target and dockerfile[target["build"]["target"]].all("HEALTHCHECK")
                assert has_check or built_check, (
                    f"{name} waits for {dependency} to be healthy; it has no health check"
                )
            elif condition["condition"] == "service_completed_successfully":
                assert dependency in ONE_SHOTS, (
                    f"{name} waits for {dependency} to exit, but it is a long-running service"
                )
    for name in ONE_SHOTS:
        assert SERVICES[name]["restart"] == "no"
    for name in ("api", "worker", "worker-gpu", "beat"):
        conditions = {d: c["condition"] for d, c in SERVICES[name]["depends_on"].items()}
        assert conditions["migrate"] == "service_completed_successfully"
        assert conditions["minio-init"] == "service_completed_successfully"
        assert conditions["redis"] == "service_healthy"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert SERVICES["migrate"]["command"][-1].rstrip().endswith("exec lowbit db upgrade")


def test_lowbit_services_build_dockerfile_targets() -> None:
    stages = parse((REPO / "Dockerfile").read_text())
    images: dict[str, str] = {}
    for name in LOWBIT:
        build = SERVICES[name]["build"]
        assert Path(build["context"]) == REPO and build["target"] in stages
        # One image per target: services on the same target share the tag.
        assert images.setdefault(build["target"], SERVICES[name]["image"]) == SERVICES[name]["image"]
    assert SERVICES["migrate"]["build"]["target"] == SERVICES["api"]["build"]["target"] == "api"
    assert SERVICES["worker-gpu"]["build"]["target"] == "worker-gpu"


def test_gpu_worker_is_behind_the_gpu_profile_with_a_device_reservation() -> None:
    gpu = SERVICES["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert len(device["device_ids"]) == 1, "one GPU per worker process"
    command = gpu["command"]
    assert command[command.index("-Q") + 1] == "gpu" and command[command.index("--concurrency") + 1] == "1"
    assert all("profiles" not in s for n, s in SERVICES.items() if n != "worker-gpu")
    worker = SERVICES["worker"]["command"]
    assert worker[worker.index("-Q") + 1] == "cpu"


def test_state_lives_in_declared_named_volumes() -> None:
    declared = set(COMPOSE["volumes"])
    used = set()
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert not source.startswith((".", "/")), f"bind mount {volume}: use a named volume"
            used.add(source)
    assert used == declared == {"pgdata", "redisdata", "miniodata"}


def test_lowbit_environment_is_distributed_mode_with_known_settings() -> None:
    settings = pytest.importorskip("service.settings")
    known = {f"LOWBIT_{field.upper()}" for field in settings.Settings.model_fields}
    for name in LOWBIT:
        env = {
            k: v for k, v in SERVICES[name]["environment"].items() if k != "BIND_ADDRESS"
        }  # migrate's guard
        assert set(env) <= known, f"{name}: unknown settings {sorted(set(env) - known)}"
        values = settings.Settings(**{k.removeprefix("LOWBIT_").lower(): v for k, v in env.items()})
        assert values.storage == "s3" and not values.is_sqlite
        assert values.broker_url.startswith("redis://redis:")
        assert f"mb --ignore-existing lowbit/{values.s3_bucket}" in SERVICES["minio-init"]["entrypoint"][-1]


def test_third_party_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        image = service["image"]
        if image.startswith("lowbit/"):
            continue
        tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", f"{name}: {image} is not pinned"


def test_beat_has_a_health_check_that_does_not_use_the_broker() -> None:
    for name in ("beat", "worker", "worker-gpu"):
        check = SERVICES[name].get("healthcheck", {})
        assert not check.get("disable"), f"{name}: health check disabled"
    assert SERVICES["beat"]["healthcheck"]["test"] == ["CMD", "python", "-m", "worker.liveness"]


def test_ports_are_published_on_localhost_unless_asked() -> None:
    for name in ("api", "minio"):
        assert all(str(port).startswith("127.0.0.1:") for port in SERVICES[name]["ports"]), name
    exposed = yaml.safe_load(compose_config(BIND_ADDRESS="0.0.0.0").stdout)["services"]
    assert all(str(port).startswith("0.0.0.0:") for port in exposed["api"]["ports"])


def _run_migrate(
    tmp_path: Path, migrate: dict[str, Any], **environment: str
) -> subprocess.CompletedProcess[str]:
    """The migrate service's command as its container runs it (real sh), with a stand-in `lowbit`."""
    stub = tmp_path / "lowbit"
    stub.write_text('#!/bin/sh\necho "lowbit $*"\n')
    stub.chmod(0o755)
    command = [part.replace("$$", "$") for part in migrate["command"]]  # Compose's escape, undone
    env = {k: str(v) for k, v in migrate["environment"].items()}
    return subprocess.run(
        command, env={**env, **environment, "PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def test_nothing_starts_exposed_with_default_secrets(tmp_path: Path) -> None:
    """Given ports bound beyond localhost, migrate (which every lowbit service waits for) refuses the
    default secrets; on localhost, or with both secrets set, it migrates."""
    assert _run_migrate(tmp_path, SERVICES["migrate"]).stdout.strip() == "lowbit db upgrade"
    exposed = yaml.safe_load(compose_config(BIND_ADDRESS="0.0.0.0").stdout)["services"]["migrate"]
    refused = _run_migrate(tmp_path, exposed)
    assert refused.returncode == 1 and "refusing to start" in refused.stderr and refused.stdout == ""
    # The secrets as Compose hands them to the container (LOWBIT_SECRET_KEY, MINIO_ROOT_PASSWORD).
    half = _run_migrate(tmp_path, exposed, LOWBIT_SECRET_KEY="s" * 32)
    assert half.returncode == 1  # MinIO's default password is still set
    ok = _run_migrate(tmp_path, exposed, LOWBIT_SECRET_KEY="s" * 32, LOWBIT_S3_SECRET_KEY="m" * 24)
    assert ok.returncode == 0 and ok.stdout.strip() == "lowbit db upgrade"
