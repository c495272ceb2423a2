"""The arm's action term: Isaac Lab's relative differential IK, solved once per control step.

Isaac Lab's :class:`DifferentialInverseKinematicsAction` solves the IK at every physics substep (5 per 20 Hz
control step here). On the CPU that is 41% of an env step: dozens of small torch ops per solve (frame pose,
Jacobian, pose error, damped least squares). :class:`ControlStepDifferentialIKAction` solves once, on the first
substep of each control step, and holds that joint target over the others, as a 20 Hz task-space controller on
a real arm would. The relative command and the controller are Isaac Lab's, unchanged; only when it is solved
differs. Same scripted-expert success and episode lengths; 1.4-1.7x the env steps per second on the CPU
(docs/benchmarks.md, "Solving the arm's IK once per control step").
"""

from __future__ import annotations

import torch
from isaaclab.envs.mdp.actions.actions_cfg import DifferentialInverseKinematicsActionCfg
from isaaclab.envs.mdp.actions.task_space_actions import DifferentialInverseKinematicsAction
from isaaclab.utils import configclass


class ControlStepDifferentialIKAction(DifferentialInverseKinematicsAction):
    """Differential IK whose joint target is solved on a control step's first substep and held for the rest
    (``cfg.solve_every_substep=True`` restores Isaac Lab's solve at every substep)."""

    cfg: ControlStepDifferentialIKActionCfg

    def __init__(self, cfg: ControlStepDifferentialIKActionCfg, env):
        super().__init__(cfg, env)
        self._solve_pending = True
        self.solves = 0  # IK solves so far (tests and benchmarks count them)

    def process_actions(self, actions: torch.Tensor):
        super().process_actions(actions)
        self._solve_pending = True  # a new command: solve on the next substep

    def apply_actions(self):
        if self._solve_pending or self.cfg.solve_every_substep:
            super().apply_actions()  # sets the articulation's joint position target; it persists over substeps
            self._solve_pending = False
            self.solves += 1


@configclass
class ControlStepDifferentialIKActionCfg(DifferentialInverseKinematicsActionCfg):
    """:class:`ControlStepDifferentialIKAction`: Isaac Lab's differential IK action, solved once per control step."""

    class_type: type[DifferentialInverseKinematicsAction] = ControlStepDifferentialIKAction
    solve_every_substep: bool = False
    """True: solve at every physics substep, as Isaac Lab's own term does (5x the IK work at decimation 5)."""
