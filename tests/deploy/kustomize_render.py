"""A small kustomize renderer for the subset deploy/ uses (test support, not product code).

No kustomize binary can be installed from this project's registries (PyPI's pykustomize needs
Python 3.14), so CI renders the overlays with this module; where a kubectl with built-in
kustomize is on PATH, tests/deploy/test_manifests.py checks that both render the same objects.

Supported ``kustomization.yaml`` fields, applied in kustomize's order:

- ``resources``: YAML files (one or more documents) and directories holding a kustomization,
  rendered recursively first;
- ``patches``: strategic merge patches from ``path`` or inline ``patch``, matched to resources
  by kind and name (or by an explicit ``target`` with kind/name);
- ``namespace``: set on every namespaced object; a Namespace object is renamed to it;
- ``labels``: ``pairs`` added to every object's labels, and with ``includeTemplates`` to the pod
  templates of workloads (``includeSelectors`` is not supported);
- ``images``: ``newName``/``newTag``/``digest`` for containers whose image name matches.

Any other field (namePrefix, generators, replicas, JSON 6902 patches...) raises
UnsupportedKustomizationError: rendering something this module does not understand would pass
validation for the wrong reason.

>>> docs = render(Path("deploy/overlays/dev"))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.strategic_merge import merge_patch

Manifest = dict[str, Any]

SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "patches", "namespace", "labels", "images"}

# Kinds that live outside namespaces (among those a lowbit deployment could contain).
CLUSTER_SCOPED_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "PriorityClass",
    "StorageClass",
    "IngressClass",
    "ClusterTriggerAuthentication",
}

# Where each workload kind keeps its pod template.
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


class UnsupportedKustomizationError(ValueError):
    """The kustomization uses a field or option this renderer does not implement."""


def _load_documents(path: Path) -> list[Manifest]:
    with path.open() as stream:
        docs = [doc for doc in yaml.safe_load_all(stream) if doc is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise ValueError(f"{path}: every document must be a Kubernetes object with apiVersion and kind")
    return docs


def _kustomization_file(directory: Path) -> Path:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory}: no kustomization.yaml")


def _pod_template(obj: Manifest) -> Manifest | None:
    node: Any = obj
    for key in POD_TEMPLATE_PATHS.get(obj["kind"], ()):
        node = node.get(key) if isinstance(node, dict) else None
    return node if obj["kind"] in POD_TEMPLATE_PATHS and isinstance(node, dict) else None


def _matches(obj: Manifest, kind: str, name: str) -> bool:
    return obj["kind"] == kind and obj["metadata"]["name"] == name


def _apply_patches(objects: list[Manifest], entries: list[dict[str, Any]], root: Path) -> list[Manifest]:
    for entry in entries:
        unknown = set(entry) - {"path", "patch", "target"}
        if unknown:
            raise UnsupportedKustomizationError(f"{root}: patches option(s) {sorted(unknown)} not supported")
        if "path" in entry:
            patch_docs = _load_documents(root / entry["path"])
        else:
            patch_docs = [doc for doc in yaml.safe_load_all(entry["patch"]) if doc is not None]
        for patch in patch_docs:
            if not isinstance(patch, dict):
                raise UnsupportedKustomizationError(f"{root}: only strategic merge patches are supported")
            target = entry.get("target") or {}
            if set(target) - {"kind", "name"}:
                raise UnsupportedKustomizationError(f"{root}: patch targets may select by kind and name only")
            kind = target.get("kind", patch.get("kind"))
            name = target.get("name", patch.get("metadata", {}).get("name"))
            hits = [i for i, obj in enumerate(objects) if _matches(obj, kind, name)]
            if not hits:
                raise ValueError(f"{root}: patch for {kind}/{name} matches no resource")
            for index in hits:
                body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
                objects[index] = merge_patch(objects[index], body)
    return objects


def _apply_namespace(objects: list[Manifest], namespace: str) -> None:
    for obj in objects:
        if obj["kind"] == "Namespace":
            obj["metadata"]["name"] = namespace
        elif obj["kind"] not in CLUSTER_SCOPED_KINDS:
            obj["metadata"]["namespace"] = namespace


def _apply_labels(objects: list[Manifest], entries: list[dict[str, Any]], root: Path) -> None:
    for entry in entries:
        if set(entry) - {"pairs", "includeTemplates", "includeSelectors"} or entry.get("includeSelectors"):
            raise UnsupportedKustomizationError(f"{root}: labels support pairs and includeTemplates only")
        pairs = {str(k): str(v) for k, v in entry.get("pairs", {}).items()}
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(pairs)
            template = _pod_template(obj) if entry.get("includeTemplates") else None
            if template is not None:
                template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _split_image(image: str) -> tuple[str, str]:
    """('registry/name', ':tag' or '@digest' or '') — a registry port's colon is not a tag."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _apply_images(objects: list[Manifest], entries: list[dict[str, Any]], root: Path) -> None:
    for entry in entries:
        if set(entry) - {"name", "newName", "newTag", "digest"}:
            raise UnsupportedKustomizationError(f"{root}: images support name/newName/newTag/digest only")
        for obj in objects:
            template = _pod_template(obj)
            if template is None:
                continue
            spec = template.get("spec", {})
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                name, suffix = _split_image(container["image"])
                if name != entry["name"]:
                    continue
                if "digest" in entry:
                    suffix = "@" + entry["digest"]
                elif "newTag" in entry:
                    suffix = ":" + str(entry["newTag"])
                container["image"] = entry.get("newName", name) + suffix


def render(directory: Path) -> list[Manifest]:
    """Render the kustomization in ``directory`` to a list of Kubernetes objects.

    Raises UnsupportedKustomizationError for fields outside the supported subset and ValueError
    for a patch that matches no resource (kustomize fails on those too).
    """
    directory = Path(directory)
    kustomization_path = _kustomization_file(directory)
    kustomization = yaml.safe_load(kustomization_path.read_text()) or {}
    unsupported = set(kustomization) - SUPPORTED_FIELDS
    if unsupported:
        raise UnsupportedKustomizationError(
            f"{kustomization_path}: unsupported field(s) {sorted(unsupported)}"
        )
    objects: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        objects.extend(render(path) if path.is_dir() else _load_documents(path))
    objects = [copy.deepcopy(obj) for obj in objects]
    objects = _apply_patches(objects, kustomization.get("patches", []), directory)
    if "namespace" in kustomization:
        _apply_namespace(objects, kustomization["namespace"])
    _apply_labels(objects, kustomization.get("labels", []), directory)
    _apply_images(objects, kustomization.get("images", []), directory)
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise ValueError(f"{kustomization_path}: duplicate objects {sorted(map(str, duplicates))}")
    return objects
