"""An Isaac Lab action term whose actions come from a VLA checkpoint.

Put ``VLAActionCfg`` in an env cfg's ``actions`` in place of the arm + gripper terms and the env drives
itself: ``env.step(torch.zeros(num_envs, 0))``. Each env step the term reads the ``policy``
observation group, asks its ``VLAPolicy`` for the next action and hands the 6 arm dims and the
gripper dim to the wrapped IK and binary-gripper terms, so physics sees exactly what it would see
with ``policy(obs)`` in a script.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING

import torch

from isaaclab.envs.mdp.actions.actions_cfg import BinaryJointPositionActionCfg, DifferentialInverseKinematicsActionCfg
from isaaclab.managers.action_manager import ActionTerm
from isaaclab.managers.manager_term_cfg import ActionTermCfg
from isaaclab.utils import configclass

from .policy import POLICY_OBS_GROUP, VLAPolicy, check_action_layout, env_policy_obs_keys


class VLAAction(ActionTerm):
    """Zero-dim action term: actions are computed from observations by a VLA checkpoint."""

    cfg: "VLAActionCfg"

    def __init__(self, cfg: "VLAActionCfg", env):
        super().__init__(cfg, env)
        self._arm = cfg.arm.class_type(cfg.arm, env)
        self._gripper = cfg.gripper.class_type(cfg.gripper, env)
        self.policy = VLAPolicy(
            cfg.checkpoint,
            None,
            replan_every=cfg.replan_every,
            temporal_ensemble=cfg.temporal_ensemble,
            instruction=cfg.instruction,
            device=cfg.policy_device or env.device,
            dtype=cfg.dtype,
            seed=cfg.seed,
            num_envs=env.num_envs,
        )
        check_action_layout(
            [("arm", self._arm, self._arm.action_dim), ("gripper", self._gripper, self._gripper.action_dim)],
            self.policy.action_dim,
            where="VLAActionCfg",
        )
        self._checked_obs = False
        self._raw = torch.zeros(env.num_envs, 0, device=self.device)
        self._last = torch.zeros(env.num_envs, self.policy.action_dim, device=self.device)

    @property
    def action_dim(self) -> int:
        return 0

    @property
    def raw_actions(self) -> torch.Tensor:
        return self._raw

    @property
    def processed_actions(self) -> torch.Tensor:
        """The 7-dim action the policy chose this step."""
        return self._last

    def process_actions(self, actions: torch.Tensor):
        if not self._checked_obs:
            self.policy.check_observation_keys(env_policy_obs_keys(self._env), where="VLAActionCfg")
            self._checked_obs = True
        obs = self._env.observation_manager.compute_group(POLICY_OBS_GROUP, update_history=False)
        a = self.policy(obs).to(self.device)
        self._last[:] = a
        self._arm.process_actions(a[:, :-1])
        self._gripper.process_actions(a[:, -1:])

    def apply_actions(self):
        self._arm.apply_actions()
        self._gripper.apply_actions()

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        self._arm.reset(env_ids)
        self._gripper.reset(env_ids)
        self.policy.reset(env_ids)


@configclass
class VLAActionCfg(ActionTermCfg):
    """Take the env's actions from a VLA checkpoint (see :class:`VLAAction`)."""

    class_type: type[ActionTerm] = VLAAction
    asset_name: str = "robot"
    checkpoint: str = MISSING
    """Checkpoint folder written by ``scripts/train.py``."""
    arm: DifferentialInverseKinematicsActionCfg = MISSING
    """The relative IK arm term the checkpoint was trained with (copy it from the task's ``actions.arm_action``)."""
    gripper: BinaryJointPositionActionCfg = MISSING
    replan_every: int = 8
    temporal_ensemble: bool = False
    instruction: str | None = None
    policy_device: str | None = None
    """Device of the model (default: the env's)."""
    dtype: str | None = None
    """``float32`` or ``bfloat16``; default ``None``: bfloat16 on CUDA, float32 on the CPU."""
    seed: int = 0
