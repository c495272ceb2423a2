"""Lift rewards (reach, lift, hold), dense enough for RL from scratch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from isaaclab.managers import SceneEntityCfg

if TYPE_CHECKING:
    from isaaclab.envs import ManagerBasedRLEnv


def _ee_cube_distance(env, cube_cfg: SceneEntityCfg, ee_frame_cfg: SceneEntityCfg) -> torch.Tensor:
    cube = env.scene[cube_cfg.name].data.root_pos_w.torch
    ee = env.scene[ee_frame_cfg.name].data.target_pos_w.torch[:, 0, :]
    return torch.linalg.vector_norm(cube - ee, dim=1)


def ee_cube_distance(
    env: ManagerBasedRLEnv,
    std: float = 0.1,
    cube_cfg: SceneEntityCfg = SceneEntityCfg("cube_1"),
    ee_frame_cfg: SceneEntityCfg = SceneEntityCfg("ee_frame"),
) -> torch.Tensor:
    """Reach: ``1 - tanh(d / std)`` of the tool-centre-to-cube distance d (1 at the cube)."""
    return 1.0 - torch.tanh(_ee_cube_distance(env, cube_cfg, ee_frame_cfg) / std)


def cube_lifted(
    env: ManagerBasedRLEnv,
    minimal_height: float = 0.04,
    table_height: float = 0.0,
    cube_cfg: SceneEntityCfg = SceneEntityCfg("cube_1"),
) -> torch.Tensor:
    """Lift: 1 where the cube's centre is ``minimal_height`` above its resting height on the table."""
    cube = env.scene[cube_cfg.name]
    rest_z = table_height + env.cfg.cube_size / 2
    return (cube.data.root_pos_w.torch[:, 2] - env.scene.env_origins[:, 2] > rest_z + minimal_height).float()


def cube_held(
    env: ManagerBasedRLEnv,
    minimal_height: float = 0.04,
    grasp_distance: float = 0.03,
    table_height: float = 0.0,
    cube_cfg: SceneEntityCfg = SceneEntityCfg("cube_1"),
    ee_frame_cfg: SceneEntityCfg = SceneEntityCfg("ee_frame"),
) -> torch.Tensor:
    """Hold: 1 where the cube is lifted AND between the fingertips (not thrown or balanced on the hand)."""
    near = _ee_cube_distance(env, cube_cfg, ee_frame_cfg) < grasp_distance
    return cube_lifted(env, minimal_height, table_height, cube_cfg) * near.float()
