"""Multi-node QAT on Kubeflow Trainer, checked statically: the TrainJob the worker creates validates
against the TrainJob CRD's own schema (kubeflow/trainer v2.3.0, tests/deploy/schemas/), and
deploy/overlays/kubeflow (rendered by the real `kubectl kustomize`, tests/deploy/overlays.py) gives
the GPU workers the RBAC, settings and image the worker's TrainJob needs."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.deploy.overlays import find, rendered
from worker.settings import WorkerSettings
from worker.training.kubeflow import POD_SETTINGS, trainjob_manifest, trainjob_state

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "trainjob-v1alpha1.json").read_text())


def _overlay_settings() -> WorkerSettings:
    """The worker's settings as deploy/overlays/kubeflow sets them on the GPU workers."""
    worker = find(rendered("overlays/kubeflow"), "Deployment", "lowbit-worker-gpu")
    env = {e["name"]: e.get("value") for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    values = {
        k.removeprefix("LOWBIT_").lower(): v for k, v in env.items() if k.startswith("LOWBIT_KUBEFLOW_") and v
    }
    return WorkerSettings(**values, kubeflow_namespace="lowbit")


def test_the_workers_trainjob_validates_against_the_crd_schema() -> None:
    settings = _overlay_settings()
    manifest = trainjob_manifest("01JABCDEF0123456789ABCDEFG", nodes=4, ws=settings)
    jsonschema.Draft7Validator(SCHEMA).validate(manifest)
    trainer = manifest["spec"]["trainer"]
    assert trainer["image"] == "registry.example.com/lowbit/worker-gpu:0.1.0"  # the prod worker-gpu image
    assert trainer["numNodes"] == 4 and trainer["args"] == [
        "--from-store",
        "jobs/01JABCDEF0123456789ABCDEFG/dist",
    ]
    assert {e["name"] for e in trainer["env"]} >= {name for name, _ in POD_SETTINGS}
    broken = json.loads(json.dumps(manifest))
    broken["spec"]["trainer"]["numNodez"] = 4
    with pytest.raises(jsonschema.ValidationError, match="numNodez"):
        jsonschema.Draft7Validator(SCHEMA).validate(broken)
    broken["spec"]["trainer"].pop("numNodez")
    broken["spec"].pop("runtimeRef")
    with pytest.raises(jsonschema.ValidationError, match="runtimeRef"):
        jsonschema.Draft7Validator(SCHEMA).validate(broken)


def test_overlay_grants_the_gpu_workers_trainjobs_and_their_pods_the_store_settings() -> None:
    objects = rendered("overlays/kubeflow")
    worker = find(objects, "Deployment", "lowbit-worker-gpu")
    pod = worker["spec"]["template"]["spec"]
    role = find(objects, "Role", "lowbit-trainjobs")
    binding = find(objects, "RoleBinding", "lowbit-worker-gpu-trainjobs")
    assert pod["serviceAccountName"] == "lowbit-worker-gpu" == binding["subjects"][0]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert role["rules"] == [{"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"],
                              "verbs": ["create", "get", "list", "watch", "delete"]}]  # fmt: skip
    config = find(objects, "ConfigMap", "lowbit-config")
    for name, source in POD_SETTINGS:
        if source == "config" and name != "LOWBIT_S3_REGION":
            assert name in config["data"], name
    assert _overlay_settings().kubeflow_enabled
    assert trainjob_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == "Complete"
    assert trainjob_state({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}) == "Running"
