"""What schema validation cannot see: references between objects and lowbit's own rules.

Selectors select their pods, every referenced ConfigMap/Secret/Deployment exists (or is a
documented out-of-band Secret), lowbit pods run as non-root with probes and resource requests,
GPU workers claim one GPU each on GPU nodes, beat is a single Recreate replica, and KEDA scales
each worker on the Redis list of the queue that worker consumes.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.overlays import (
    EXTERNAL_SECRETS,
    KUSTOMIZATIONS,
    POD_TEMPLATE_PATHS,
    Manifest,
    find,
    rendered,
)

NAMES = sorted(KUSTOMIZATIONS)


def _template(obj: Manifest) -> dict[str, Any]:
    node: Any = obj
    for key in POD_TEMPLATE_PATHS[obj["kind"]]:
        node = node[key]
    return node


def _pod_labels(obj: Manifest) -> dict[str, str]:
    return _template(obj).get("metadata", {}).get("labels", {})


def _workloads(objects: list[Manifest]) -> list[Manifest]:
    return [o for o in objects if o["kind"] in POD_TEMPLATE_PATHS]


def _lowbit_workloads(objects: list[Manifest]) -> list[Manifest]:
    return [
        o
        for o in _workloads(objects)
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "lowbit"
    ]


def _containers(obj: Manifest) -> list[dict[str, Any]]:
    spec = _template(obj)["spec"]
    return spec["containers"] + spec.get("initContainers", [])


def _flag(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


@pytest.mark.parametrize("name", NAMES)
def test_objects_land_in_the_overlay_namespace(name: str) -> None:
    objects = rendered(name)
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    assert [n["metadata"]["name"] for n in namespaces] in ([], [KUSTOMIZATIONS[name]])
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == KUSTOMIZATIONS[name], obj["metadata"]["name"]


@pytest.mark.parametrize("name", NAMES)
def test_selectors_select_their_own_pods(name: str) -> None:
    objects = rendered(name)
    for obj in _workloads(objects):
        if obj["kind"] == "Job":
            continue
        selector = obj["spec"]["selector"]["matchLabels"]
        labels = _pod_labels(obj)
        assert selector.items() <= labels.items(), obj["metadata"]["name"]
        # No other workload's pods may match this selector (a Service or PDB would mix them).
        for other in _workloads(objects):
            if other is not obj:
                assert not selector.items() <= _pod_labels(other).items()
    for svc in (o for o in objects if o["kind"] == "Service"):
        pods = [w for w in _workloads(objects) if svc["spec"]["selector"].items() <= _pod_labels(w).items()]
        assert len(pods) == 1, f"Service {svc['metadata']['name']} selects {len(pods)} workloads"
        port_names = {p.get("name") for c in _containers(pods[0]) for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names, (
                f"{svc['metadata']['name']}: no container port {port['targetPort']}"
            )
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        match = pdb["spec"]["selector"]["matchLabels"].items()
        assert any(match <= _pod_labels(w).items() for w in _workloads(objects))


@pytest.mark.parametrize("name", NAMES)
def test_referenced_configmaps_secrets_and_targets_exist(name: str) -> None:
    objects = rendered(name)
    present = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    secrets = {n for k, n in present if k == "Secret"} | EXTERNAL_SECRETS[name]
    for obj in _workloads(objects):
        for container in _containers(obj):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in present
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets
            for var in container.get("env", []):
                ref = var.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    cm = present[("ConfigMap", ref["configMapKeyRef"]["name"])]
                    assert ref["configMapKeyRef"]["key"] in cm["data"]
                if "secretKeyRef" in ref:
                    secret_ref = ref["secretKeyRef"]
                    assert secret_ref["name"] in secrets
                    if ("Secret", secret_ref["name"]) in present:
                        assert secret_ref["key"] in present[("Secret", secret_ref["name"])]["stringData"]
    for obj in objects:
        if obj["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"):
            assert ("Deployment", obj["spec"]["scaleTargetRef"]["name"]) in present
        for trigger in obj.get("spec", {}).get("triggers", []) if obj["kind"] == "ScaledObject" else []:
            if "authenticationRef" in trigger:
                auth = present[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
                assert all(ref["name"] in secrets for ref in auth["spec"]["secretTargetRef"])


@pytest.mark.parametrize("name", NAMES)
def test_lowbit_pods_run_as_non_root_with_resources(name: str) -> None:
    for obj in _lowbit_workloads(rendered(name)):
        pod = _template(obj)["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        # Only the GPU workers of overlays/kubeflow call the Kubernetes API (their TrainJobs; rbac.yaml).
        api_client = name == "overlays/kubeflow" and obj["metadata"]["name"] == "lowbit-worker-gpu"
        assert pod["automountServiceAccountToken"] is api_client
        for container in _containers(obj):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["resources"]["requests"].keys() >= {"cpu", "memory"}
            assert "memory" in container["resources"]["limits"]


def test_api_probes_and_port_match_the_command() -> None:
    api = find(rendered("overlays/prod"), "Deployment", "lowbit-api")
    (container,) = _template(api)["spec"]["containers"]
    assert container["command"][:2] == ["lowbit", "serve-api"]
    port = int(_flag(container["command"], "--port"))
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize(
    ("deployment", "queue"), [("lowbit-worker-cpu", "cpu"), ("lowbit-worker-gpu", "gpu")]
)
def test_workers_consume_their_queue_with_a_liveness_probe(deployment: str, queue: str) -> None:
    worker = find(rendered("overlays/prod"), "Deployment", deployment)
    (container,) = _template(worker)["spec"]["containers"]
    assert container["command"][:4] == ["celery", "-A", "worker.app", "worker"]
    assert _flag(container["command"], "-Q") == queue
    # Liveness from the process itself, not through the broker (a Redis outage must not fail them all).
    assert container["livenessProbe"]["exec"]["command"] == ["python", "-m", "worker.liveness"]
    assert _template(worker)["spec"]["terminationGracePeriodSeconds"] >= 300


def test_gpu_workers_claim_one_gpu_each_on_gpu_nodes() -> None:
    worker = find(rendered("overlays/prod"), "Deployment", "lowbit-worker-gpu")
    pod = _template(worker)["spec"]
    (container,) = pod["containers"]
    assert _flag(container["command"], "--concurrency") == "1"
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    cpu_worker = _template(find(rendered("overlays/prod"), "Deployment", "lowbit-worker-cpu"))["spec"]
    assert "nvidia.com/gpu" not in cpu_worker["containers"][0]["resources"]["limits"]
    assert "tolerations" not in cpu_worker


@pytest.mark.parametrize("name", NAMES)
def test_beat_is_one_replica_replaced_not_rolled(name: str) -> None:
    beat = find(rendered(name), "Deployment", "lowbit-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert _containers(beat)[0]["command"][:4] == ["celery", "-A", "worker.app", "beat"]
    assert _containers(beat)[0]["livenessProbe"]["exec"]["command"] == ["python", "-m", "worker.liveness"]


def test_migration_job_upgrades_the_schema_with_the_api_image() -> None:
    objects = rendered("overlays/prod")
    job = find(objects, "Job", "lowbit-migrate")
    (container,) = _containers(job)
    assert container["command"] == ["lowbit", "db", "upgrade"]
    api_image = _containers(find(objects, "Deployment", "lowbit-api"))[0]["image"]
    assert container["image"] == api_image
    assert _template(job)["spec"]["restartPolicy"] in ("Never", "OnFailure")


def test_prod_images_are_pinned_and_dev_images_are_dev() -> None:
    for name, expected_tag in (("overlays/prod", ":0.1.0"), ("overlays/dev", ":dev")):
        for obj in _lowbit_workloads(rendered(name)):
            for container in _containers(obj):
                assert container["image"].endswith(expected_tag), (name, container["image"])


def test_keda_scales_each_worker_on_its_own_queue() -> None:
    objects = rendered("examples/keda")
    scaled = [o for o in objects if o["kind"] == "ScaledObject"]
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == {"lowbit-worker-cpu", "lowbit-worker-gpu"}
    for obj in scaled:
        target = find(objects, "Deployment", obj["spec"]["scaleTargetRef"]["name"])
        queue = _flag(_containers(target)[0]["command"], "-Q")
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == queue
        assert int(trigger["metadata"]["listLength"]) >= 1
        host, _, port = trigger["metadata"]["address"].rpartition(":")
        assert host and port.isdigit()
        # KEDA owns the replica count; a fixed one would be reset on every apply.
        assert "replicas" not in target["spec"]
        assert obj["spec"]["minReplicaCount"] <= obj["spec"]["maxReplicaCount"]


def test_lowbit_settings_names_are_settings_the_service_reads() -> None:
    settings = pytest.importorskip("service.settings")
    known = {f"LOWBIT_{field.upper()}" for field in settings.Settings.model_fields}
    worker_settings = pytest.importorskip("worker.settings")  # the workers' own (LOWBIT_KUBEFLOW_*, ...)
    known |= {f"LOWBIT_{field.upper()}" for field in worker_settings.WorkerSettings.model_fields}
    for name in NAMES:
        for obj in rendered(name):
            keys: set[str] = set()
            if obj["kind"] == "ConfigMap":
                keys |= set(obj["data"])
            if obj["kind"] == "Secret":
                keys |= set(obj.get("stringData", {})) | set(obj.get("data", {}))
            for workload in _lowbit_workloads([obj]):
                keys |= {v["name"] for c in _containers(workload) for v in c.get("env", [])}
            unknown = {k for k in keys if k.startswith("LOWBIT_")} - known
            assert not unknown, (
                f"deploy/{name}: {obj['metadata']['name']} sets unknown settings {sorted(unknown)}"
            )


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_long_running_pods_wait_for_the_migration(name: str) -> None:
    """Every lowbit Deployment starts after the schema is at head: an init container `lowbit db wait`
    (the migration Job runs `lowbit db upgrade`)."""
    deployments = [o for o in _lowbit_workloads(rendered(name)) if o["kind"] == "Deployment"]
    assert deployments
    for obj in deployments:
        inits = _template(obj)["spec"].get("initContainers", [])
        assert [c["command"][:3] for c in inits] == [["lowbit", "db", "wait"]], obj["metadata"]["name"]
        assert inits[0]["image"] == _template(obj)["spec"]["containers"][0]["image"]


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_third_party_images_are_pinned(name: str) -> None:
    for obj in _workloads(rendered(name)):
        for container in _containers(obj):
            image = container["image"]
            if image.startswith("lowbit/"):
                continue
            tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
            assert tag and tag != "latest", f"deploy/{name}: {image} is not pinned"
