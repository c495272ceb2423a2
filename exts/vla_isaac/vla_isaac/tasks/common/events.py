"""The reset events shared by the cube tasks: scene defaults, jittered arm joints, cubes placed apart."""

from __future__ import annotations

from isaaclab.managers import EventTermCfg as EventTerm
from isaaclab.managers import SceneEntityCfg
from isaaclab.utils import configclass

from ... import mdp


def cube_reset_events_cfg(cubes: list[SceneEntityCfg], pose_range: dict, min_separation: float) -> type:
    """The ``events`` config class of a cube task: ``cubes`` drawn in ``pose_range``, centres ``min_separation``
    [m] apart. ``refresh_kinematics`` recomputes the poses the observation reads; a subclass's extra reset events
    run after it, so they must not move bodies."""

    @configclass
    class EventCfg:
        reset_all = EventTerm(func=mdp.reset_scene_to_default, mode="reset", params={"reset_joint_targets": True})
        randomize_robot_joints = EventTerm(
            func=mdp.randomize_joint_by_gaussian_offset,  # gripper joints kept at their default
            mode="reset",
            params={"mean": 0.0, "std": 0.02, "asset_cfg": SceneEntityCfg("robot")},
        )
        randomize_cubes = EventTerm(
            func=mdp.randomize_object_pose,
            mode="reset",
            params={"pose_range": pose_range, "min_separation": min_separation, "asset_cfgs": cubes},
        )
        refresh_kinematics = EventTerm(func=mdp.refresh_kinematics, mode="reset")

    return EventCfg
