"""Multi-node QAT as a Kubeflow Trainer ``TrainJob`` (trainer.kubeflow.org/v1alpha1, the API the
current Kubeflow Trainer release documents; its ``torch-distributed`` ClusterTrainingRuntime runs
``torchrun`` on every node with the node count, rank and master address in PET_* variables).

For a job with ``compute: gpu`` and ``params.nodes > 1`` on a GPU worker with
``LOWBIT_KUBEFLOW_ENABLED=true`` (deploy/components/kubeflow/ wires it, with RBAC), the worker

1. uploads the run bundle (spec + inputs) under the job's object-storage prefix ``jobs/<id>/dist/``;
2. creates the TrainJob through the Kubernetes API (in-cluster service account): the worker image
   runs ``python -m torch.distributed.run -m worker.training.entry --from-store jobs/<id>/dist``
   on ``nodes`` nodes × ``kubeflow_gpus_per_node`` GPUs, with the object-store settings and secret
   as environment variables (configMapKeyRef / secretKeyRef);
3. follows the TrainJob's conditions (Complete / Failed) and rank 0's progress file into the job;
   a cancel deletes the TrainJob; a retried job finds its TrainJob by name and follows it again;
4. on Complete, loads rank 0's trained weights from the prefix and exports like any QAT job.

This path is validated statically here (the manifest against the CRD's schema, kustomize rendering);
no Kubernetes cluster with Kubeflow Trainer and GPUs is available to run it end to end.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from core.errors import CancelledError, ConfigError
from worker.pipeline.context import JobContext, TechniqueResult
from worker.settings import WorkerSettings
from worker.storage_io import download, get_bytes, upload

API_VERSION = "trainer.kubeflow.org/v1alpha1"
PLURAL = "trainjobs"
_SA = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Object-store settings the training pods need: (variable, from the ConfigMap or the Secret).
POD_SETTINGS = (
    ("LOWBIT_STORAGE", "config"), ("LOWBIT_S3_ENDPOINT", "config"), ("LOWBIT_S3_BUCKET", "config"),
    ("LOWBIT_S3_REGION", "config"), ("LOWBIT_S3_ACCESS_KEY", "secret"), ("LOWBIT_S3_SECRET_KEY", "secret"),
)  # fmt: skip


def trainjob_name(job_id: str) -> str:
    return f"lowbit-qat-{job_id.lower()}"


def bundle_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/dist"


def trainjob_manifest(job_id: str, nodes: int, ws: WorkerSettings) -> dict[str, Any]:
    """The TrainJob of lowbit job ``job_id`` (see the module docstring)."""
    if not ws.kubeflow_image:
        raise ConfigError("LOWBIT_KUBEFLOW_IMAGE is not set; it names the worker image the training pods run")
    env: list[dict[str, Any]] = []
    for name, source in POD_SETTINGS:
        ref = {"name": ws.kubeflow_env_configmap if source == "config" else ws.kubeflow_env_secret, "key": name,
               "optional": name == "LOWBIT_S3_REGION"}  # fmt: skip
        env.append(
            {"name": name, "valueFrom": {"configMapKeyRef" if source == "config" else "secretKeyRef": ref}}
        )
    env += [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
    gpus = ws.kubeflow_gpus_per_node
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainJob",
        "metadata": {
            "name": trainjob_name(job_id),
            "namespace": ws.kubeflow_namespace,
            "labels": {
                "app.kubernetes.io/part-of": "lowbit",
                "app.kubernetes.io/component": "qat-trainjob",
                "lowbit.dev/job-id": job_id.lower(),
            },
        },
        "spec": {
            "runtimeRef": {
                "name": ws.kubeflow_runtime,
                "kind": "ClusterTrainingRuntime",
                "apiGroup": "trainer.kubeflow.org",
            },
            "trainer": {
                "image": ws.kubeflow_image,
                "command": ["python", "-m", "torch.distributed.run", "-m", "worker.training.entry"],
                "args": ["--from-store", bundle_prefix(job_id)],
                "numNodes": nodes,
                "numProcPerNode": gpus,
                "resourcesPerNode": {
                    "limits": {"nvidia.com/gpu": gpus},
                    "requests": {"nvidia.com/gpu": gpus},
                },
                "env": env,
            },
        },
    }


def trainjob_state(obj: dict[str, Any]) -> str:
    """'Complete', 'Failed' or 'Running' from a TrainJob's status conditions."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return "Running"


class KubernetesApi:
    """The few calls the worker makes, with the pod's service account (in-cluster only)."""

    def __init__(self) -> None:
        import httpx

        host, port = (
            os.environ.get("KUBERNETES_SERVICE_HOST"),
            os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
        )
        if not host or not (_SA / "token").is_file():
            raise ConfigError(
                "multi-node QAT needs a worker running in Kubernetes with a service account token"
            )
        self.client = httpx.Client(
            base_url=f"https://{host}:{port}", verify=str(_SA / "ca.crt"), timeout=30,
            headers={"Authorization": f"Bearer {(_SA / 'token').read_text().strip()}"},
        )  # fmt: skip

    def _path(self, namespace: str, name: str = "") -> str:
        return f"/apis/{API_VERSION}/namespaces/{namespace}/{PLURAL}" + (f"/{name}" if name else "")

    def create(self, manifest: dict[str, Any]) -> None:
        resp = self.client.post(self._path(manifest["metadata"]["namespace"]), json=manifest)
        if resp.status_code not in (201, 409):  # 409: a retried job's TrainJob exists; follow it
            raise RuntimeError(f"creating TrainJob failed: HTTP {resp.status_code} {resp.text[:500]}")

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        resp = self.client.get(self._path(namespace, name))
        resp.raise_for_status()
        return dict(resp.json())

    def delete(self, namespace: str, name: str) -> None:
        self.client.delete(self._path(namespace, name), params={"propagationPolicy": "Foreground"})


def upload_bundle(ctx: JobContext) -> None:
    """The run bundle under ``jobs/<id>/dist/``: bundle.json naming the input files beside it."""
    prefix, files = bundle_prefix(ctx.job_id), {}
    for role in ("model", "calib", "eval", "train"):
        path = getattr(ctx, f"{role}_path")
        if path is not None:
            upload(ctx.store, f"{prefix}/{role}{path.suffix}", path, ctx.wsettings)
            files[role] = f"{role}{path.suffix}"
    bundle = {
        "job_id": ctx.job_id,
        "spec": ctx.spec,
        "device": "cuda",
        "train_manifest": ctx.train_manifest,
        **files,
    }
    local = ctx.workdir / "bundle.json"
    local.write_text(json.dumps(bundle))
    upload(ctx.store, f"{prefix}/bundle.json", local, ctx.wsettings)


def run_on_kubeflow(ctx: JobContext) -> TechniqueResult:
    """Train on ``params.nodes`` nodes as a TrainJob and follow it (see the module docstring)."""
    from safetensors.torch import load_file

    from core.qat import finish_qat, prepare_qat
    from worker.techniques.quantsim import build_sim, calibrate

    ws, nodes = ctx.wsettings, int(ctx.params.get("nodes") or 1)
    if ctx.spec.get("compute") != "gpu" or not ws.kubeflow_enabled:
        raise ConfigError(
            "params.nodes > 1 runs as a Kubeflow TrainJob: it needs compute 'gpu' and GPU workers with "
            "LOWBIT_KUBEFLOW_ENABLED=true (deploy/components/kubeflow); use world_size for one node"
        )
    api, manifest = KubernetesApi(), trainjob_manifest(ctx.job_id, nodes, ws)
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    upload_bundle(ctx)
    api.create(manifest)
    ctx.monitor.log(f"created TrainJob {namespace}/{name}: {nodes} nodes x {ws.kubeflow_gpus_per_node} GPUs")
    prefix = bundle_prefix(ctx.job_id)
    while (state := trainjob_state(api.get(namespace, name))) == "Running":
        if ctx.cancel_check():
            api.delete(namespace, name)
            raise CancelledError(f"cancelled; TrainJob {name} deleted")
        raw = get_bytes(ctx.store, f"{prefix}/progress.json", ws)
        if raw:
            progress = json.loads(raw)
            ctx.monitor.progress(min(1.0, progress["step"] / max(1, progress["total"])))
        time.sleep(ws.kubeflow_poll_s)
    outcome = json.loads(get_bytes(ctx.store, f"{prefix}/result.json", ws) or b"{}")
    if state == "Failed" or "metrics" not in outcome:
        raise RuntimeError(f"TrainJob {name} ended {state}: {outcome.get('error', 'see its pods logs')}")
    final = download(ctx.store, f"{prefix}/final.safetensors", ctx.workdir / "final.safetensors", ws)
    sim: Any = build_sim(ctx)
    calibrate(ctx, sim)
    prepare_qat(sim, "range_learning" if ctx.params.get("range_learning") else "regular")
    sim.model.load_state_dict(load_file(final, device=str(ctx.device)))
    finish_qat(sim)
    return TechniqueResult(sim=sim, metrics={"qat": {**outcome["metrics"], "trainjob": name, "nodes": nodes}})
