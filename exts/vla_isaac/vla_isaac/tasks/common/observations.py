"""The ``policy`` observation group shared by the cube tasks (what the recorder stores and policies read).

Term names follow NVIDIA's Cosmos stack data so recorded files line up with it; the order of the terms is
the order of the ``obs/<key>`` datasets in a recorded file, so it must stay as it is.
"""

from __future__ import annotations

from isaaclab.managers import ObservationGroupCfg as ObsGroup
from isaaclab.managers import ObservationTermCfg as ObsTerm
from isaaclab.managers import SceneEntityCfg
from isaaclab.utils import configclass

from ... import mdp


def cube_policy_obs_cfg(cubes: list[SceneEntityCfg]) -> type[ObsGroup]:
    """The ``policy`` group class of a cube task whose cubes are ``cubes`` (the order of ``cube_positions``)."""

    @configclass
    class PolicyCfg(ObsGroup):
        """Proprioception, cameras, privileged cube state and the last action; not concatenated."""

        eef_pos = ObsTerm(func=mdp.ee_frame_pos)
        eef_quat = ObsTerm(func=mdp.ee_frame_quat)
        gripper_pos = ObsTerm(func=mdp.gripper_pos)
        joint_pos = ObsTerm(func=mdp.joint_pos_rel)
        joint_vel = ObsTerm(func=mdp.joint_vel_rel)
        table_cam = ObsTerm(func=mdp.image_rgb, params={"sensor_cfg": SceneEntityCfg("table_cam"), "normalize": False})
        wrist_cam = ObsTerm(func=mdp.image_rgb, params={"sensor_cfg": SceneEntityCfg("wrist_cam"), "normalize": False})
        cube_positions = ObsTerm(func=mdp.cube_positions, params={"cube_cfgs": cubes})
        cube_orientations = ObsTerm(func=mdp.cube_orientations, params={"cube_cfgs": cubes})
        actions = ObsTerm(func=mdp.last_action)

        def __post_init__(self):
            self.enable_corruption = False
            self.concatenate_terms = False

    return PolicyCfg
