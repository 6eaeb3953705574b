"""QAT checkpoints: safetensors for tensors, JSON for everything else — never pickle.

A checkpoint is a folder ``step-00000123/`` holding

* ``model.safetensors`` — ``sim.model.state_dict()`` (weights, BN statistics, quantizer scale/zero point);
* ``optimizer.safetensors`` + the ``optimizer`` entry of ``state.json`` — the optimizer's tensors
  flattened as ``state.<param index>.<name>``, its param groups and scalar state as JSON;
* ``rng.safetensors`` — torch's CPU (and CUDA) generator states, so dropout masks continue exactly;
* ``state.json`` — step, epoch, mode and the schedule, written last.

The folder is written under a temporary name and renamed into place, so a process killed while
writing leaves no half checkpoint that resume could pick up. The newest ``keep`` checkpoints stay.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from core.errors import LowbitError

FORMAT_VERSION = 1
_NAME = re.compile(r"^step-(\d{8})$")


def _tensors(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage: store independent CPU copies.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in d.items()}


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entries in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    directory: str | os.PathLike[str],
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    info: dict[str, Any],
    keep: int = 2,
    extra: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically into ``directory``; return its folder. ``extra`` adds
    ``<name>.safetensors`` files (e.g. the best weights so far)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_tensors(model.state_dict()), tmp / "model.safetensors")
    opt_tensors, opt_meta = _split_optimizer(optimizer.state_dict())
    save_file(_tensors(opt_tensors), tmp / "optimizer.safetensors")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(_tensors(rng), tmp / "rng.safetensors")
    for name, tensors in (extra or {}).items():
        save_file(_tensors(tensors), tmp / f"{name}.safetensors")
    state = {"format_version": FORMAT_VERSION, "step": step, "optimizer": opt_meta, **info}
    (tmp / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def load_checkpoint(
    folder: str | os.PathLike[str], model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore model, optimizer and RNG state from ``folder``; return its state.json content."""
    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text())
    if state.get("format_version") != FORMAT_VERSION:
        raise LowbitError(
            f"checkpoint {folder} has format version {state.get('format_version')!r}; this lowbit reads {FORMAT_VERSION}"
        )
    device = next(iter(model.parameters()), torch.empty(0)).device
    model.load_state_dict(load_file(folder / "model.safetensors", device=str(device)))
    opt_state = _join_optimizer(
        load_file(folder / "optimizer.safetensors", device=str(device)), state["optimizer"]
    )
    optimizer.load_state_dict(opt_state)
    rng = load_file(folder / "rng.safetensors")
    torch.set_rng_state(rng["cpu"])
    cuda_states = [rng[k] for k in sorted(rng) if k.startswith("cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    return state
