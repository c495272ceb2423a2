__all__ = [
    "ControlStepDifferentialIKAction",
    "ControlStepDifferentialIKActionCfg",
    "cube_orientations",
    "cube_pos_rel_ee",
    "cube_positions",
    "CubeLiftedAndHeld",
    "cube_lifted",
    "ee_cube_distance",
    "cube_held",
    "cube_goal_height",
    "lift_target_height",
    "refresh_kinematics",
    "randomize_object_pose",
    "randomize_joint_by_gaussian_offset",
]

from .actions import ControlStepDifferentialIKAction, ControlStepDifferentialIKActionCfg
from .events import refresh_kinematics
from .observations import cube_orientations, cube_pos_rel_ee, cube_positions, lift_target_height
from .rewards import cube_goal_height, cube_held, cube_lifted, ee_cube_distance
from .terminations import CubeLiftedAndHeld
from isaaclab_tasks.contrib.stack.mdp.stack_events import randomize_joint_by_gaussian_offset, randomize_object_pose
from isaaclab_tasks.contrib.stack.mdp import *
