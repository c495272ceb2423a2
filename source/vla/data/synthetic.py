"""Synthetic demo files in the Isaac Lab recorder layout and in NVIDIA's Cosmos layout.

For tests, the overfit check and benchmarks without a simulator. The task needs vision: a cube sits at a
random table position that appears only in the images; the expert moves the gripper towards it, descends
and closes, so the action chunk depends on where the cube is relative to the gripper. Files mirror what
the recorders write (gzip level 2, uint8 images, float32 low-dim terms, ``num_samples``/``success``
attributes, ``env_args``), including the Cosmos extras (segmentation, normals, depth, cube terms) that a
key mapping must ignore.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np

LAYOUTS = ("isaaclab", "cosmos")
TABLE = np.array([150.0, 110.0, 70.0])
CUBE_RGB = np.array([210.0, 35.0, 35.0])
CUBE = 0.18  # cube edge in table units ([-1, 1]^2)


def _render(size, cube_xy, centre, half, table_rgb, rng, gripper_xy=None, fingers=False) -> np.ndarray:
    h, w = size
    u = (np.arange(w) + 0.5) / w * 2 - 1
    v = (np.arange(h) + 0.5) / h * 2 - 1
    wx = centre[0] + u[None, :] * half
    wy = centre[1] + v[:, None] * half
    img = np.empty((h, w, 3), np.float32)
    img[:] = table_rgb
    img[(np.abs(wx - cube_xy[0]) < CUBE / 2) & (np.abs(wy - cube_xy[1]) < CUBE / 2)] = CUBE_RGB
    if gripper_xy is not None:
        img[(wx - gripper_xy[0]) ** 2 + (wy - gripper_xy[1]) ** 2 < 0.06**2] = 40.0
    if fingers:
        f = max(h // 8, 1)
        img[-2 * f :, :f] = 45.0
        img[-2 * f :, -f:] = 45.0
    img += rng.normal(0.0, 4.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_episode(rng: np.random.Generator, steps: int, image_size=(64, 64)) -> dict:
    """One expert episode: per-step images, the 27-dim proprio parts, actions (T, 7), cube state."""
    cube = rng.uniform(-0.75, 0.75, 2)
    g = rng.uniform(-0.75, 0.75, 2)
    gz = rng.uniform(0.3, 0.5)
    table = TABLE + rng.uniform(-20, 20, 3)
    closed = False
    rec = {
        k: []
        for k in ("table_cam", "wrist_cam", "eef_pos", "eef_quat", "gripper_pos", "joint_pos", "joint_vel", "actions")
    }
    prev_q = None
    for _ in range(steps):
        d = cube - g
        dist = float(np.linalg.norm(d))
        a = np.zeros(7, np.float32)
        a[:2] = np.clip(2.0 * d, -1.0, 1.0)
        a[2] = -0.6 if dist < 0.2 and gz > 0.08 else 0.0
        a[3], a[4], a[5] = 0.3 * d[1], -0.3 * d[0], 0.05 * math.sin(3 * gz)
        closed = closed or (dist < 0.12 and gz < 0.15)
        a[6] = -1.0 if closed else 1.0
        q = np.array(
            [
                math.atan2(g[1], g[0] + 2.0),
                1.2 * g[0],
                0.8 * g[1],
                2 * gz - 0.5,
                math.sin(2 * g[0]),
                math.cos(2 * g[1]),
                0.3 * g[0] * g[1],
                0.0,
                0.0,
            ],
            np.float32,
        )
        q[7:] = 0.0 if closed else 0.04
        rec["table_cam"].append(_render(image_size, cube, (0.0, 0.0), 1.0, table, rng, gripper_xy=g))
        rec["wrist_cam"].append(_render(image_size, cube, g, 0.3 + 0.6 * gz, table * 0.9, rng, fingers=True))
        rec["eef_pos"].append([g[0], g[1], gz])
        yaw = 0.3 * g[0]
        rec["eef_quat"].append([0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)])  # xyzw
        rec["gripper_pos"].append(q[7:9])
        rec["joint_pos"].append(q)
        rec["joint_vel"].append(np.zeros(9, np.float32) if prev_q is None else (q - prev_q) / 0.02)
        rec["actions"].append(a)
        prev_q = q
        g = np.clip(g + 0.08 * a[:2], -1.0, 1.0)
        gz = max(0.05, gz + 0.08 * a[2])
    out = {k: np.asarray(v, dtype=np.uint8 if k.endswith("cam") else np.float32) for k, v in rec.items()}
    out["cube_xy"] = cube.astype(np.float32)
    return out


def _dset(group: h5py.Group, key: str, data: np.ndarray) -> None:
    group.create_dataset(key, data=data, compression="gzip", compression_opts=2)


def write_synthetic_demos(
    path: str | Path,
    *,
    layout: str = "isaaclab",
    num_demos: int = 4,
    steps: int = 24,
    image_size: tuple[int, int] | None = None,
    seed: int = 0,
    instruction: str | None = None,
    vary_length: bool = True,
) -> Path:
    """Write ``num_demos`` synthetic demos to ``path`` in the ``isaaclab`` or ``cosmos`` layout.

    Demo lengths vary around ``steps`` (so chunks hit episode ends); ``instruction`` is stored as the
    demos' ``instruction`` attribute when given. Cosmos files default to 200x200 views like NVIDIA's.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if image_size is None:
        image_size = (200, 200) if layout == "cosmos" else (64, 64)
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    env_name = (
        "IsaacContrib-Stack-Cube-Franka-IK-Rel-Visuomotor-Cosmos-v0"
        if layout == "cosmos"
        else "VLA-Lift-Cube-Franka-v0"
    )
    with h5py.File(path, "w") as f:
        f.attrs["format_version"] = 1
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": env_name, "type": 2})
        total = 0
        for i in range(num_demos):
            T = steps + (int(rng.integers(-steps // 4, steps // 4 + 1)) if vary_length else 0)
            ep = synthetic_episode(rng, max(T, 1), image_size)
            T = ep["actions"].shape[0]
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = T
            g.attrs["success"] = True
            g.attrs["seed"] = seed * 1000 + i
            if instruction is not None:
                g.attrs["instruction"] = instruction
            _dset(g, "actions", ep["actions"])
            _dset(g, "processed_actions", np.concatenate([ep["actions"], ep["actions"][:, -1:]], axis=1))
            obs = g.create_group("obs")
            last = np.concatenate([np.zeros((1, 7), np.float32), ep["actions"][:-1]])
            for key in ("eef_pos", "eef_quat", "gripper_pos", "joint_pos", "joint_vel", "table_cam", "wrist_cam"):
                _dset(obs, key, ep[key])
            _dset(obs, "actions", last)
            cube_pos = np.repeat(np.array([[ep["cube_xy"][0], ep["cube_xy"][1], 0.025]], np.float32), T, axis=0)
            cube_quat = np.repeat(np.array([[0.0, 0.0, 0.0, 1.0]], np.float32), T, axis=0)
            if layout == "cosmos":
                _dset(obs, "cube_positions", np.tile(cube_pos, (1, 3)))
                _dset(obs, "cube_orientations", np.tile(cube_quat, (1, 3)))
                _dset(obs, "object", rng.normal(0, 0.1, (T, 39)).astype(np.float32))
                h, w = ep["table_cam"].shape[1:3]
                seg = np.zeros((T, h, w, 4), np.uint8)
                seg[..., 3] = 255
                _dset(obs, "table_cam_segmentation", seg)
                _dset(obs, "table_cam_normals", np.zeros((T, h, w, 3), np.float32))
                _dset(obs, "table_cam_depth", np.ones((T, h, w, 1), np.float32))
            else:
                _dset(obs, "cube_positions", cube_pos)
                _dset(obs, "cube_orientations", cube_quat)
            for sub in ("initial_state", "states"):
                n = 1 if sub == "initial_state" else T
                robot = g.create_group(f"{sub}/articulation/robot")
                _dset(robot, "joint_position", np.repeat(ep["joint_pos"][:1], n, axis=0))
                _dset(robot, "joint_velocity", np.zeros((n, 9), np.float32))
                _dset(robot, "root_pose", np.repeat([[0, 0, 0, 0, 0, 0, 1.0]], n, axis=0).astype(np.float32))
                _dset(robot, "root_velocity", np.zeros((n, 6), np.float32))
                cube = g.create_group(f"{sub}/rigid_object/cube")
                _dset(cube, "root_pose", np.concatenate([cube_pos[:n], cube_quat[:n]], axis=1))
                _dset(cube, "root_velocity", np.zeros((n, 6), np.float32))
            total += T
        data.attrs["total"] = total
    return path
