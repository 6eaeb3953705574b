"""What the deploy tests render: the kustomizations under deploy/, each rendered once per session."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

from tests.deploy.kustomize_render import Manifest, render

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# Every kustomization a user may apply, and the namespace its objects must land in.
KUSTOMIZATIONS: dict[str, str] = {
    "base": "lowbit",
    "overlays/dev": "lowbit-dev",
    "overlays/prod": "lowbit",
    "examples/keda": "lowbit",
}

# Secrets an overlay expects to be created out of band (documented in deploy/README.md).
EXTERNAL_SECRETS: dict[str, set[str]] = {
    "base": {"lowbit-secrets"},
    "overlays/dev": set(),
    "overlays/prod": {"lowbit-secrets"},
    "examples/keda": {"lowbit-secrets", "lowbit-keda-redis"},
}


@cache
def _rendered(name: str) -> tuple[Manifest, ...]:
    return tuple(render(DEPLOY / name))


def rendered(name: str) -> list[Manifest]:
    """The objects of deploy/<name>, rendered; a fresh copy the caller may modify."""
    return copy.deepcopy(list(_rendered(name)))


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    """The one object of ``kind`` named ``name``; fails the test with the names present if absent."""
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, (
        f"expected one {kind}/{name}, found {[o['metadata']['name'] for o in objects if o['kind'] == kind]}"
    )
    return hits[0]
