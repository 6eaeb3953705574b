"""What the deploy tests render: every kustomization under deploy/, rendered once per session by the
real tool (``kubectl kustomize``, Debian package ``kubectl``; scripts/system-deps.sh installs it)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

Manifest = dict[str, Any]

# Where each workload kind keeps its pod template.
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}

# Kustomizations with known expectations: the namespace their objects must land in. Every
# kustomization under deploy/ is rendered and schema-validated whether listed here or not.
KUSTOMIZATIONS: dict[str, str] = {
    "base": "lowbit",
    "overlays/dev": "lowbit-dev",
    "overlays/prod": "lowbit",
    "examples/keda": "lowbit",
    "overlays/kubeflow": "lowbit",
}

# Secrets an overlay expects to be created out of band (documented in deploy/README.md).
EXTERNAL_SECRETS: dict[str, set[str]] = {
    "base": {"lowbit-secrets"},
    "overlays/dev": set(),
    "overlays/prod": {"lowbit-secrets"},
    "examples/keda": {"lowbit-secrets", "lowbit-keda-redis"},
    "overlays/kubeflow": {"lowbit-secrets"},
}


def all_kustomizations() -> list[str]:
    """Every directory under deploy/ holding a kustomization, relative to deploy/."""
    names = ("kustomization.yaml", "kustomization.yml", "Kustomization")
    return sorted({str(p.parent.relative_to(DEPLOY)) for n in names for p in DEPLOY.rglob(n)})


def kubectl() -> str:
    path = shutil.which("kubectl")
    assert path is not None, "kubectl is not on PATH: run scripts/system-deps.sh (Debian package kubectl)"
    return path


@cache
def _rendered(name: str) -> tuple[Manifest, ...]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / name)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"kubectl kustomize deploy/{name} failed: {out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def rendered(name: str) -> list[Manifest]:
    """The objects of deploy/<name> as kubectl kustomize renders them; a fresh copy the caller may modify."""
    return copy.deepcopy(list(_rendered(name)))


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    """The one object of ``kind`` named ``name``; fails the test with the names present if absent."""
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, (
        f"expected one {kind}/{name}, found {[o['metadata']['name'] for o in objects if o['kind'] == kind]}"
    )
    return hits[0]
