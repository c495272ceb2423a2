"""Observation terms for any number of cubes, in the env frame.

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
