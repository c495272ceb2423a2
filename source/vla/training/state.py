"""Resumable training state: ``accelerator.save_state`` in an atomically published folder.

A state folder ``<output>/training_state/step_NNNNNN/`` holds what accelerate writes (every rank
takes part, so FSDP shards and each rank's RNG are saved):

- ``model.safetensors``: the trainable weights (head, LoRA; the frozen backbone is filtered out by the
  trainer's save hook, it is rebuilt from the preset),
- ``optimizer.bin``, ``scheduler.bin``: AdamW and LR-schedule state (``torch.save``; read back with
  ``weights_only=True``, accelerate's default),
- ``random_states_<rank>.pkl``: python/numpy/torch RNG of every process (``torch.save``; read back with
  ``weights_only=True`` plus accelerate's numpy allow-list),

plus the trainer's own files: ``ema.safetensors`` (when EMA is on) and ``state.json`` (step, samples
consumed, world size), written last. ``state.json`` marks a complete folder.

All ranks write into ``training_state/.step_NNNNNN.tmp`` and the main process renames it when everyone is
done, so a SIGKILL leaves either the previous or the new state, never a half-written one.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from ..utils.io import replace_dir

STATE_DIR = "training_state"
STATE_FILE = "state.json"
EMA_FILE = "ema.safetensors"
# what accelerate's save_state writes for one model + one optimizer + one scheduler (accelerate 1.x)
ACCELERATE_FILES = ("model.safetensors", "optimizer.bin", "scheduler.bin")
_STEP_RE = re.compile(r"^step_(\d+)$")


class TrainingStateError(ValueError):
    """A training state folder is missing, incomplete, or from a different run."""


def state_dir(root: str | Path, step: int) -> Path:
    return Path(root) / STATE_DIR / f"step_{step:06d}"


def tmp_state_dir(root: str | Path, step: int) -> Path:
    """The folder every rank writes into before the main process publishes it as ``step_N``."""
    return Path(root) / STATE_DIR / f".step_{step:06d}.tmp"


def publish_state(tmp: Path, target: Path, meta: dict, keep_last: int) -> Path:
    """Main process, after every rank's ``save_state`` into ``tmp``: write ``state.json``, rename, prune."""
    (tmp / STATE_FILE).write_text(json.dumps(meta, indent=1))
    replace_dir(tmp, target)  # re-saving a step (a run resumed from an earlier state) replaces it
    if keep_last > 0:
        for stale in list_states(target.parent.parent)[:-keep_last]:
            shutil.rmtree(stale, ignore_errors=True)
    return target


def list_states(root: str | Path) -> list[Path]:
    """Complete state folders of a run, oldest first."""
    base = Path(root) / STATE_DIR
    if not base.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in base.iterdir() if (m := _STEP_RE.match(p.name)) and (p / STATE_FILE).is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_state(root: str | Path) -> Path | None:
    states = list_states(root)
    return states[-1] if states else None


def read_state_meta(path: str | Path, num_processes: int) -> dict:
    """``state.json`` of a complete state folder, checked against this launch (one-line errors)."""
    path = Path(path)
    try:
        meta = json.loads((path / STATE_FILE).read_text())
        step = int(meta["step"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TrainingStateError(f"{path}: unreadable {STATE_FILE} ({e}); resume from an earlier step_* folder") from None
    missing = [n for n in ACCELERATE_FILES if not (path / n).is_file()]
    if missing:
        hint = (
            "it was written by an older version of the trainer (safetensors-only state); "
            "start a new run (its checkpoints/ still load)"
            if (path / "optimizer.safetensors").is_file()
            else "resume from an earlier step_* folder"
        )
        raise TrainingStateError(f"{path}: incomplete training state (missing {missing}); {hint}")
    saved_world = int(meta.get("world_size", 1))
    if saved_world != num_processes:
        raise TrainingStateError(
            f"{path}: saved by {saved_world} process(es) but resumed with {num_processes}; each process has its own "
            f"data shard and RNG, so relaunch with --num_processes {saved_world}"
        )
    ranks = [p for p in range(saved_world) if not (path / f"random_states_{p}.pkl").is_file()]
    if ranks:
        raise TrainingStateError(f"{path}: no RNG state for process(es) {ranks}; resume from an earlier step_* folder")
    meta["step"] = step
    return meta
