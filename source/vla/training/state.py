"""Resumable training state as safetensors + JSON (nothing is pickled).

A state folder ``<output>/training_state/step_NNNNNN/`` holds

- ``model.safetensors``: the trainable weights (head, LoRA) and the head's buffers,
- ``optimizer.safetensors`` + ``optimizer.json``: AdamW moments as tensors, the param groups as JSON,
- ``ema.safetensors`` (when EMA is on),
- ``rng.safetensors``: torch CPU/CUDA generator states and numpy's MT19937 key as tensors,
- ``state.json``: step, scheduler state, python/numpy RNG scalars, samples consumed, config digest.

The folder is written through ``atomic_dir`` so a SIGKILL leaves either the previous or the new state.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..utils.io import atomic_dir

STATE_DIR = "training_state"
_STEP_RE = re.compile(r"^step_(\d+)$")


class TrainingStateError(ValueError):
    """A training state folder is missing, incomplete, or from a different run."""


def _contig(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


# ---------------------------------------------------------------------- RNG
def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    kind, key, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_key"] = torch.from_numpy(np.asarray(key, dtype=np.int64))
    py_version, py_state, py_gauss = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(cached)], "python": [py_version, list(py_state), py_gauss]}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"].to(torch.uint8))
    cuda = sorted(k for k in tensors if k.startswith("torch_cuda_"))
    if cuda and torch.cuda.is_available():
        states = [tensors[k].to(torch.uint8) for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy_key"].numpy().astype(np.uint32), pos, has_gauss, cached))
    v, st, g = meta["python"]
    random.setstate((v, tuple(st), g))


# ---------------------------------------------------------------------- optimizer
def optimizer_to_flat(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """``optimizer.state_dict()`` -> (tensors for safetensors, JSON-able rest)."""
    tensors, scalars = {}, {}
    for pid, st in state_dict["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}|{k}"] = _contig(v)
            else:
                scalars.setdefault(str(pid), {})[k] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    def key(pid: str):  # ints for a plain state dict, parameter names for FSDP's full optimizer state
        return int(pid) if pid.isdigit() else pid

    state: dict = {}
    for name, t in tensors.items():
        pid, k = name.split("|", 1)
        state.setdefault(key(pid), {})[k] = t
    for pid, st in meta["scalars"].items():
        state.setdefault(key(pid), {}).update(st)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------- save / load
def save_training_state(
    root: str | Path,
    step: int,
    *,
    model_tensors: dict[str, torch.Tensor],
    optimizer_state: dict,
    scheduler_state: dict,
    ema_tensors: dict[str, torch.Tensor] | None,
    meta: dict,
    keep_last: int = 2,
) -> Path:
    """Write ``<root>/training_state/step_<step>`` atomically and prune older states beyond ``keep_last``."""
    base = Path(root) / STATE_DIR
    target = base / f"step_{step:06d}"
    opt_tensors, opt_meta = optimizer_to_flat(optimizer_state)
    rng_tensors, rng_meta = capture_rng()
    with atomic_dir(target) as tmp:
        save_file({k: _contig(v) for k, v in model_tensors.items()}, str(tmp / "model.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(opt_meta))
        if ema_tensors is not None:
            save_file({k: _contig(v) for k, v in ema_tensors.items()}, str(tmp / "ema.safetensors"))
        save_file({k: _contig(v) for k, v in rng_tensors.items()}, str(tmp / "rng.safetensors"))
        doc = {"step": int(step), "scheduler": _jsonable(scheduler_state), "rng": rng_meta, **meta}
        (tmp / "state.json").write_text(json.dumps(doc, indent=1))
    if keep_last > 0:
        for old in list_states(root)[:-keep_last]:
            import shutil

            shutil.rmtree(old, ignore_errors=True)
    return target


def list_states(root: str | Path) -> list[Path]:
    """Complete state folders of a run, oldest first."""
    base = Path(root) / STATE_DIR
    if not base.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in base.iterdir() if (m := _STEP_RE.match(p.name)) and (p / "state.json").is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_state(root: str | Path) -> Path | None:
    states = list_states(root)
    return states[-1] if states else None


def load_training_state(path: str | Path) -> dict:
    """Everything ``save_training_state`` wrote, as tensors and dicts (RNG not yet restored)."""
    path = Path(path)
    need = ["state.json", "model.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors"]
    missing = [n for n in need if not (path / n).is_file()]
    if missing:
        raise TrainingStateError(
            f"{path}: incomplete training state (missing {missing}); resume from an earlier step_* folder"
        )
    try:
        doc = json.loads((path / "state.json").read_text())
        out = {
            "step": int(doc["step"]),
            "meta": doc,
            "model": load_file(str(path / "model.safetensors")),
            "optimizer": optimizer_from_flat(
                load_file(str(path / "optimizer.safetensors")), json.loads((path / "optimizer.json").read_text())
            ),
            "rng": (load_file(str(path / "rng.safetensors")), doc["rng"]),
            "scheduler": doc["scheduler"],
            "ema": load_file(str(path / "ema.safetensors")) if (path / "ema.safetensors").is_file() else None,
        }
    except (OSError, ValueError, KeyError) as e:
        raise TrainingStateError(
            f"{path}: unreadable training state ({e}); resume from an earlier step_* folder"
        ) from None
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if torch.is_tensor(obj):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, (np.generic,)):
        return obj.item()
    return obj
