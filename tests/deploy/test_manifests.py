"""Kubernetes manifests in deploy/: render every kustomization and validate every object offline.

Core objects are validated against the Kubernetes OpenAPI JSON schemas bundled in the PyPI
package kubernetes-validate, in strict mode (unknown fields are errors), for the oldest and the
newest Kubernetes version we support. KEDA objects (CRDs, not in those schemas) are validated
against tests/deploy/schemas/keda-v1alpha1.json, written from KEDA's specification pages.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.kustomize_render import UnsupportedKustomizationError, render
from tests.deploy.overlays import DEPLOY, KUSTOMIZATIONS, find, rendered

# Oldest Kubernetes minor we support, and the newest the bundled schemas know.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
KEDA_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "keda-v1alpha1.json").read_text())


def _key(obj: dict) -> tuple[str, str | None, str]:
    return (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])


def _validate(obj: dict, version: str) -> None:
    if obj["apiVersion"].startswith("keda.sh/"):
        jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(obj)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_validates_against_its_schema(name: str, version: str) -> None:
    objects = rendered(name)
    assert objects, f"deploy/{name} rendered nothing"
    for obj in objects:
        try:
            _validate(obj, version)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            where = ".".join(str(p) for p in exc.absolute_path)
            pytest.fail(f"deploy/{name}: {obj['kind']}/{obj['metadata']['name']} at {where}: {exc.message}")


def test_every_kustomization_under_deploy_is_tested() -> None:
    found = {str(p.parent.relative_to(DEPLOY)) for p in DEPLOY.rglob("kustomization.yaml")}
    assert found == set(KUSTOMIZATIONS)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["spec"].__setitem__("replicaz", 2), "replicaz"),
        (lambda d: d["spec"].__setitem__("replicas", "two"), "two"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"), "name"),
    ],
    ids=["unknown-field", "wrong-type", "missing-required"],
)
def test_schema_validation_catches_broken_objects(mutate, expected: str) -> None:
    """Given a valid rendered Deployment, When it is broken, Then strict validation names the fault."""
    deployment = find(rendered("overlays/prod"), "Deployment", "lowbit-api")
    mutate(deployment)
    with pytest.raises(kubernetes_validate.ValidationError, match=expected):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_keda_schema_catches_broken_scaled_objects() -> None:
    scaled = find(rendered("examples/keda"), "ScaledObject", "lowbit-worker-cpu")
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 2  # KEDA metadata values are strings
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(scaled)
    scaled = find(rendered("examples/keda"), "ScaledObject", "lowbit-worker-cpu")
    scaled["spec"]["maxReplicas"] = 3  # the HPA's name, not KEDA's
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(scaled)


def test_renderer_refuses_fields_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\nnamePrefix: dev-\n")
    with pytest.raises(UnsupportedKustomizationError, match="namePrefix"):
        render(tmp_path)


def test_renderer_fails_on_a_patch_that_matches_nothing(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
    (tmp_path / "p.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata: {a: b}\n")
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\npatches:\n  - path: p.yaml\n")
    with pytest.raises(ValueError, match="matches no resource"):
        render(tmp_path)


def _kubectl_with_kustomize() -> bool:
    if shutil.which("kubectl") is None:
        return False
    probe = subprocess.run(["kubectl", "kustomize", "--help"], capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.mark.skipif(not _kubectl_with_kustomize(), reason="no kubectl with built-in kustomize on PATH")
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_renderer_agrees_with_kubectl_kustomize(name: str) -> None:
    """The test renderer and the real kustomize produce the same objects, field for field."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / name)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    real = {_key(o): o for o in yaml.safe_load_all(out) if o}
    ours = {_key(o): o for o in rendered(name)}
    assert sorted(ours) == sorted(real)
    for key, obj in ours.items():
        assert obj == real[key], f"deploy/{name}: {key} differs from kubectl kustomize"
