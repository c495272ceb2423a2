"""Lift rewards (reach, lift, hold, goal height), dense enough for RL from scratch.

They follow Isaac Lab's lift task (``object_ee_distance``, ``object_is_lifted``, ``object_goal_distance``)
with the fixed goal of Lift-Cube (the success height) instead of a sampled goal pose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from isaaclab.managers import ManagerTermBase, RewardTermCfg, SceneEntityCfg
from isaaclab.utils import index_fill_

from .terminations import CubeLiftedAndHeld

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


class cube_goal_height(ManagerTermBase):
    """Goal tracking: ``1 - tanh(h / std)`` while the cube is lifted, where h is the height the cube still
    lacks to ``goal_height`` above its resting height (0 at or above it: Lift-Cube's success is a minimum
    height, so higher is not penalised). Isaac Lab's ``object_goal_distance`` with a fixed goal.

    With ``hold_steps`` set, the term also tracks whether the episode succeeded by the task's own
    definition (:class:`CubeLiftedAndHeld`: ``goal_height`` held for ``hold_steps`` steps, within
    ``grasp_distance`` of the tool centre) and logs the
    mean over the envs being reset as ``Metrics/success_rate``, as ``object_goal_distance`` does; RL
    training envs have no success termination (ending an episode on success would cut its rewards short).
    """

    def __init__(self, cfg: RewardTermCfg, env: ManagerBasedRLEnv):
        super().__init__(cfg, env)
        self._held = CubeLiftedAndHeld(cfg, env) if cfg.params.get("hold_steps") else None
        self._succeeded = torch.zeros(env.num_envs, dtype=torch.bool, device=env.device)

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        if self._held is None:
            return
        ids = slice(None) if env_ids is None else env_ids
        self._env.extras.setdefault("log", {})["Metrics/success_rate"] = self._succeeded[ids].float().mean().item()
        index_fill_(self._succeeded, env_ids, False)
        self._held.reset(env_ids)

    def __call__(
        self,
        env: ManagerBasedRLEnv,
        std: float,
        goal_height: float = 0.1,
        minimal_height: float = 0.04,
        hold_steps: int | None = None,
        table_height: float = 0.0,
        grasp_distance: float | None = None,
        cube_cfg: SceneEntityCfg = SceneEntityCfg("cube_1"),
        ee_frame_cfg: SceneEntityCfg = SceneEntityCfg("ee_frame"),
    ) -> torch.Tensor:
        rest_z = table_height + env.cfg.cube_size / 2
        z = env.scene[cube_cfg.name].data.root_pos_w.torch[:, 2] - env.scene.env_origins[:, 2]
        if self._held is not None:
            self._succeeded |= self._held(env, minimal_height=goal_height, hold_steps=hold_steps,
                                          table_height=table_height, grasp_distance=grasp_distance, cube_cfg=cube_cfg,
                                          ee_frame_cfg=ee_frame_cfg)
        shortfall = (rest_z + goal_height - z).clamp(min=0.0)
        return (z > rest_z + minimal_height).float() * (1.0 - torch.tanh(shortfall / std))
