"""Small HDF5 demo files for the data and training tests.

Good files come from ``vla.data.synthetic`` in the Isaac Lab recorder layout or NVIDIA's Cosmos layout
(200x200 views plus segmentation/normals/depth and cube terms a key mapping must ignore). Broken files
are a good file with one realistic defect each; ``BAD_CASES`` maps the defect to words the one-line
error must contain.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from vla.data.synthetic import write_synthetic_demos


def isaaclab_file(
    path: Path, num_demos: int = 4, steps: int = 20, image_size=(64, 64), seed: int = 0, instruction: str | None = None
) -> Path:
    return write_synthetic_demos(
        path,
        layout="isaaclab",
        num_demos=num_demos,
        steps=steps,
        image_size=image_size,
        seed=seed,
        instruction=instruction,
    )


def cosmos_file(path: Path, num_demos: int = 3, steps: int = 14, seed: int = 1) -> Path:
    return write_synthetic_demos(path, layout="cosmos", num_demos=num_demos, steps=steps, seed=seed)


# defect -> (demo it is in, key it concerns, words the error line must contain)
BAD_CASES = {
    "missing_key": ("demo_1", "obs/eef_pos", ["missing"]),
    "nan": ("demo_0", "obs/joint_vel", ["NaN/Inf", "step(s) 3"]),
    "wrong_shape": ("demo_1", "obs/gripper_pos", ["shape", "expected"]),
    "action_dim": ("demo_0", "actions", ["action dim 6", "expected 7"]),
    "empty_demo": ("demo_2", None, ["empty demo"]),
    "unreadable": (None, None, ["unreadable"]),
}


def _replace(group: h5py.Group, key: str, data: np.ndarray) -> None:
    del group[key]
    group.create_dataset(key, data=data)


def broken_file(path: Path, kind: str) -> Path:
    """A 3-demo Isaac Lab file with the defect ``kind`` (a key of ``BAD_CASES``)."""
    path = Path(path)
    isaaclab_file(path, num_demos=3, steps=12, image_size=(32, 32), seed=7)
    if kind == "unreadable":  # a copy cut short: the HDF5 superblock survives, the rest doesn't
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
        return path
    with h5py.File(path, "r+") as f:
        d = f["data"]
        if kind == "missing_key":
            del d["demo_1/obs/eef_pos"]
        elif kind == "nan":
            x = d["demo_0/obs/joint_vel"][()]
            x[3, 2] = np.nan
            _replace(d["demo_0/obs"], "joint_vel", x)
        elif kind == "wrong_shape":
            x = d["demo_1/obs/gripper_pos"][()]
            _replace(d["demo_1/obs"], "gripper_pos", np.concatenate([x, x[:, :1]], axis=1))
        elif kind == "action_dim":
            _replace(d["demo_0"], "actions", d["demo_0/actions"][()][:, :6])
        elif kind == "empty_demo":
            g = d["demo_2"]
            _replace(g, "actions", np.zeros((0, 7), np.float32))
            for key in list(g["obs"].keys()):
                x = g["obs"][key]
                _replace(g["obs"], key, np.zeros((0, *x.shape[1:]), x.dtype))
        else:
            raise ValueError(f"unknown defect {kind!r}; one of {sorted(BAD_CASES)}")
    return path
