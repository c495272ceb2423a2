"""Check demo files against a key mapping before any training starts.

Every problem is one line naming the file, the demo, the key and the fix, so a user with a 10 GB
recording learns in seconds what is wrong instead of minutes into a training run. Images are checked by
shape and dtype only (reading them all would take as long as an epoch); actions and proprio are read
in full for NaN/Inf.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np

from .hdf5 import DATA_GROUP, DatasetError, as_file_list, demo_names, open_h5, read_instruction
from .key_mapping import KeyMapping


@dataclass
class DatasetSummary:
    files: int = 0
    demos: int = 0
    steps: int = 0
    min_len: int = 0
    max_len: int = 0
    image_shapes: dict = field(default_factory=dict)
    instructions: set = field(default_factory=set)

    def lines(self, mapping: KeyMapping) -> list[str]:
        shapes = ", ".join(f"{k} " + " ".join(map(str, sorted(v))) for k, v in self.image_shapes.items())
        return [
            f"{self.files} file(s), {self.demos} demos, {self.steps} steps "
            f"(demo length {self.min_len}..{self.max_len})",
            f"key mapping '{mapping.name}': proprio {mapping.proprio_dim} = "
            + " + ".join(f"{k} {d}" for k, d in mapping.proprio)
            + f", actions {mapping.action_dim}",
            f"images: {shapes}",
            "instructions: "
            + "; ".join(sorted(self.instructions)[:5])
            + (" ..." if len(self.instructions) > 5 else ""),
        ]


def _finite_problem(x: np.ndarray) -> str | None:
    bad = ~np.isfinite(x)
    if not bad.any():
        return None
    steps = np.unique(np.nonzero(bad.reshape(bad.shape[0], -1).any(1))[0])
    shown = ", ".join(map(str, steps[:5].tolist())) + (" ..." if steps.size > 5 else "")
    return f"{int(bad.sum())} NaN/Inf value(s) at step(s) {shown}"


def _check_demo(path: str, f: h5py.File, name: str, km: KeyMapping, summary: DatasetSummary) -> list[str]:
    where = f"{path}: {DATA_GROUP}/{name}"
    g = f[DATA_GROUP][name]
    problems: list[str] = []
    if km.actions not in g:
        return [
            f"{where}/{km.actions}: missing; every demo needs its actions (T x {km.action_dim}) — "
            f"re-record the demo or set 'actions' in the key mapping"
        ]
    a = g[km.actions]
    if a.ndim != 2:
        return [f"{where}/{km.actions}: shape {a.shape}, expected (T, {km.action_dim}); fix the recorder's action term"]
    T = a.shape[0]
    if T == 0:
        return [f"{where}: empty demo (0 steps); delete it from the file or re-record it"]
    if a.shape[1] != km.action_dim:
        problems.append(
            f"{where}/{km.actions}: action dim {a.shape[1]}, expected {km.action_dim} (6 relative IK pose deltas + 1 "
            f"gripper); record with a relative-IK arm + binary gripper env or convert the actions"
        )
    elif (msg := _finite_problem(np.asarray(a[()], dtype=np.float64))) is not None:
        problems.append(f"{where}/{km.actions}: {msg}; drop this demo or re-record it")
    if "obs" not in g or not isinstance(g["obs"], h5py.Group):
        return problems + [f"{where}/obs: missing observation group; record with observations enabled"]
    obs = g["obs"]
    for key, dim in km.proprio:
        if key not in obs:
            problems.append(
                f"{where}/obs/{key}: missing (key mapping '{km.name}' needs it for proprio); add the observation "
                f"term to the recording or use a key mapping that matches (scripts/inspect_dataset.py lists the keys)"
            )
            continue
        x = obs[key]
        if x.ndim != 2 or x.shape[1] != dim:
            problems.append(
                f"{where}/obs/{key}: shape {x.shape}, expected ({T}, {dim}); "
                "fix the dim in the key mapping or the recording"
            )
            continue
        if x.shape[0] != T:
            problems.append(
                f"{where}/obs/{key}: {x.shape[0]} steps but {T} actions; the demo is truncated — re-record it"
            )
            continue
        if (msg := _finite_problem(np.asarray(x[()], dtype=np.float64))) is not None:
            problems.append(f"{where}/obs/{key}: {msg}; drop this demo or re-record it")
    for key in (km.context_image, km.wrist_image):
        if key not in obs:
            problems.append(
                f"{where}/obs/{key}: missing image (key mapping '{km.name}' reads it); record the camera or set "
                f"'context_image'/'wrist_image' in the key mapping"
            )
            continue
        x = obs[key]
        if x.ndim != 4 or x.shape[-1] != 3:
            problems.append(f"{where}/obs/{key}: shape {x.shape}, expected ({T}, H, W, 3) RGB; record RGB images")
        elif x.dtype != np.uint8:
            problems.append(f"{where}/obs/{key}: dtype {x.dtype}, expected uint8 (0..255); record with normalize=False")
        elif x.shape[0] != T:
            problems.append(
                f"{where}/obs/{key}: {x.shape[0]} frames but {T} actions; the demo is truncated — re-record it"
            )
        else:
            summary.image_shapes.setdefault(key, set()).add(tuple(x.shape[1:]))
    if not problems:
        summary.demos += 1
        summary.steps += T
        summary.min_len = T if summary.min_len == 0 else min(summary.min_len, T)
        summary.max_len = max(summary.max_len, T)
        summary.instructions.add(read_instruction(f, name, km.instruction_attr, km.instruction))
    return problems


def verify_files(files, mapping: KeyMapping | str, summary: DatasetSummary | None = None) -> list[str]:
    """All problems of ``files`` under ``mapping``, one line each (empty list = ready to train)."""
    km = KeyMapping.load(mapping)
    summary = summary if summary is not None else DatasetSummary()
    problems: list[str] = []
    for path in as_file_list(files):
        try:
            f = open_h5(path)
        except DatasetError as e:
            problems.append(str(e))
            continue
        with f:
            summary.files += 1
            names = demo_names(f)
            if not names:
                problems.append(
                    f"{path}: no demos under '{DATA_GROUP}/' (expected {DATA_GROUP}/demo_0, ...); "
                    f"is this an Isaac Lab recorder / robomimic file?"
                )
                continue
            for name in names:
                try:
                    problems += _check_demo(path, f, name, km, summary)
                except (OSError, KeyError, TypeError) as e:  # corrupt chunks, broken links
                    problems.append(f"{path}: {DATA_GROUP}/{name}: unreadable ({e}); re-record or re-copy the file")
    return problems


def check_files(files, mapping: KeyMapping | str, max_lines: int = 10) -> DatasetSummary:
    """Raise ``DatasetError`` with the first problem(s) if any; else return the summary."""
    summary = DatasetSummary()
    problems = verify_files(files, mapping, summary)
    if problems:
        more = f" (+{len(problems) - 1} more problem(s); run scripts/verify_dataset.py)" if len(problems) > 1 else ""
        raise DatasetError(problems[0] + more)
    return summary
