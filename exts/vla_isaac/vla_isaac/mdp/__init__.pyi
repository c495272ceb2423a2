__all__ = [
    "cube_orientations",
    "cube_positions",
    "CubeLiftedAndHeld",
    "cube_lifted",
    "ee_cube_distance",
    "cube_held",
    "refresh_kinematics",
    "randomize_object_pose",
    "randomize_joint_by_gaussian_offset",
]

from .events import refresh_kinematics
from .observations import cube_orientations, cube_positions
from .rewards import cube_held, cube_lifted, ee_cube_distance
from .terminations import CubeLiftedAndHeld
from isaaclab_tasks.contrib.stack.mdp.stack_events import randomize_joint_by_gaussian_offset, randomize_object_pose
from isaaclab_tasks.contrib.stack.mdp import *
