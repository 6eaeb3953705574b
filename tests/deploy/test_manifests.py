"""Kubernetes manifests in deploy/: render every kustomization with ``kubectl kustomize`` and validate
every object offline.

Core objects are validated against the Kubernetes OpenAPI JSON schemas bundled in the PyPI
package kubernetes-validate, in strict mode (unknown fields are errors), for the oldest and the
newest Kubernetes version we support. KEDA objects (CRDs, not in those schemas) are validated
against tests/deploy/schemas/keda-v1alpha1.json, written from KEDA's specification pages.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from tests.deploy.overlays import KUSTOMIZATIONS, all_kustomizations, find, rendered

# Oldest Kubernetes minor we support, and the newest the bundled schemas know.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
KEDA_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "keda-v1alpha1.json").read_text())


def _validate(obj: dict, version: str) -> None:
    if obj["apiVersion"].startswith("keda.sh/"):
        jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(obj)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("name", all_kustomizations())
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


def test_the_known_kustomizations_exist() -> None:
    assert set(KUSTOMIZATIONS) <= set(all_kustomizations())


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
