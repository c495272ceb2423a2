"""Lift success: the cube is held (between the fingertips) above a height for several consecutive steps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from isaaclab.managers import ManagerTermBase, SceneEntityCfg, TerminationTermCfg

if TYPE_CHECKING:
    from isaaclab.envs import ManagerBasedRLEnv


class CubeLiftedAndHeld(ManagerTermBase):
    """True once the cube's centre has stayed ``minimal_height`` above its resting height for
    ``hold_steps`` consecutive env steps: a cube flicked upwards passes the height only briefly. With
    ``grasp_distance`` the cube must also be that close to the tool centre (between the fingertips): a PPO
    actor found it could balance the cube on the back of the hand (docs/rl_expert.md). The scripted
    expert's grasp keeps it within 2 mm.

    Params: ``minimal_height`` [m], ``hold_steps``, ``table_height`` [m], ``grasp_distance`` [m] (None: height
    only), ``cube_cfg``, ``ee_frame_cfg``.
    """

    def __init__(self, cfg: TerminationTermCfg, env: ManagerBasedRLEnv):
        super().__init__(cfg, env)
        self._steps_above = torch.zeros(env.num_envs, dtype=torch.long, device=env.device)

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        self._steps_above[slice(None) if env_ids is None else env_ids] = 0

    def __call__(
        self,
        env: ManagerBasedRLEnv,
        minimal_height: float = 0.1,
        hold_steps: int = 10,
        table_height: float = 0.0,
        grasp_distance: float | None = None,
        cube_cfg: SceneEntityCfg = SceneEntityCfg("cube_1"),
        ee_frame_cfg: SceneEntityCfg = SceneEntityCfg("ee_frame"),
    ) -> torch.Tensor:
        cube = env.scene[cube_cfg.name].data.root_pos_w.torch
        z = cube[:, 2] - env.scene.env_origins[:, 2]
        above = z > table_height + env.cfg.cube_size / 2 + minimal_height
        if grasp_distance is not None:
            tcp = env.scene[ee_frame_cfg.name].data.target_pos_w.torch[:, 0, :]
            above &= torch.linalg.vector_norm(cube - tcp, dim=1) < grasp_distance
        self._steps_above = torch.where(above, self._steps_above + 1, torch.zeros_like(self._steps_above))
        return self._steps_above >= hold_steps
