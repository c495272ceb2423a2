"""Observation terms for any number of cubes, in the env frame, and the state terms of the RL expert.

Isaac Lab's ``cube_positions_in_world_frame`` is fixed to three cubes and reports world coordinates, which
differ between parallel envs by the env origin; these take a list of cubes and subtract the env origin
(like ``ee_frame_pos``), so a recorded demo does not depend on which env slot it ran in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from isaaclab.managers import SceneEntityCfg

if TYPE_CHECKING:
    from isaaclab.envs import ManagerBasedEnv


def cube_positions(env: ManagerBasedEnv, cube_cfgs: list[SceneEntityCfg]) -> torch.Tensor:
    """(N, 3 * num_cubes) cube centres relative to the env origin [m]."""
    origins = env.scene.env_origins
    return torch.cat([env.scene[c.name].data.root_pos_w.torch - origins for c in cube_cfgs], dim=1)


def cube_orientations(env: ManagerBasedEnv, cube_cfgs: list[SceneEntityCfg]) -> torch.Tensor:
    """(N, 4 * num_cubes) cube orientations, quaternions xyzw (envs are not rotated)."""
    return torch.cat([env.scene[c.name].data.root_quat_w.torch for c in cube_cfgs], dim=1)


def cube_pos_rel_ee(
    env: ManagerBasedEnv,
    cube_cfg: SceneEntityCfg = SceneEntityCfg("cube_1"),
    ee_frame_cfg: SceneEntityCfg = SceneEntityCfg("ee_frame"),
) -> torch.Tensor:
    """(N, 3) cube centre minus tool centre [m]: the reaching error, given directly so that a small
    state policy (the RL expert) does not have to learn the subtraction."""
    cube = env.scene[cube_cfg.name].data.root_pos_w.torch
    ee = env.scene[ee_frame_cfg.name].data.target_pos_w.torch[:, 0, :]
    return cube - ee


def lift_target_height(env: ManagerBasedEnv, goal_height: float = 0.1, table_height: float = 0.0) -> torch.Tensor:
    """(N, 1) height [m, env frame] the cube centre must reach for success: Lift's fixed goal, as an
    observation like the goal command of Isaac Lab's lift, so a policy can serve other goal heights."""
    rest_z = table_height + env.cfg.cube_size / 2
    return torch.full((env.num_envs, 1), rest_z + goal_height, device=env.device)
