"""Strategic merge patch, the subset the lowbit manifests use (test support, not product code).

Kubernetes' strategic merge patch merges maps key by key, deletes a key whose patch value is
null, and merges lists of objects that have a *merge key* (``containers`` by ``name``,
``volumeMounts`` by ``mountPath``, ...) item by item; every other list is replaced whole.
The merge keys below are the ones Kubernetes declares for the fields these manifests patch.
Patch directives (``$patch``, ``$retainKeys``, ``$setElementOrder``...) are not supported and
raise, so a manifest that starts using one fails loudly instead of rendering differently from
kustomize.

>>> merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"c": None, "d": 3}})
{'a': {'b': 1, 'd': 3}}
"""

from __future__ import annotations

import copy
from typing import Any

# Field name -> merge key, as declared in the Kubernetes API (patchMergeKey).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}


class UnsupportedPatchError(ValueError):
    """The patch uses a strategic-merge feature this renderer does not implement."""


def _list_merge_key(field: str, base: list[Any], patch: list[Any]) -> str | None:
    if field == "ports":
        # Container ports merge on containerPort, Service ports on port.
        items = [i for i in base + patch if isinstance(i, dict)]
        return "containerPort" if any("containerPort" in i for i in items) else "port"
    return MERGE_KEYS.get(field)


def _merge_list(field: str, base: list[Any], patch: list[Any]) -> list[Any]:
    key = _list_merge_key(field, base, patch)
    if key is None or not all(isinstance(i, dict) and key in i for i in base + patch):
        return copy.deepcopy(patch)
    merged = [copy.deepcopy(i) for i in base]
    for item in patch:
        for index, existing in enumerate(merged):
            if existing[key] == item[key]:
                merged[index] = merge_patch(existing, item)
                break
        else:
            merged.append(copy.deepcopy(item))
    return merged


def merge_patch(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with the strategic merge ``patch`` applied; neither input is modified.

    Maps merge recursively; a ``None`` value deletes the key; lists with a known merge key merge
    item by item (new items appended), other lists are replaced. Raises UnsupportedPatchError on
    ``$``-directives.
    """
    result = copy.deepcopy(base)
    for key, value in patch.items():
        if key.startswith("$"):
            raise UnsupportedPatchError(f"patch directive {key!r} is not supported by this renderer")
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_patch(result[key], value)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result
