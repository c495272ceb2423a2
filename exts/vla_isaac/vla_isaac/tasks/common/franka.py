"""Franka set-up shared by the cube tasks: robot, end-effector frame, wrist camera, IK-Rel actions.

Actions (7) follow Isaac Lab's Franka IK-Rel stack env: a relative pose delta of the hand
(dx, dy, dz, droll, dpitch, dyaw; differential IK, damped least squares, scale 0.5, tool-centre offset)
and a binary gripper command (>= 0 opens, < 0 closes). The IK is solved once per 20 Hz control step and its
joint target held over the physics substeps (:mod:`vla_isaac.mdp.actions`; Isaac Lab's term re-solves at
every substep: 1.4-1.7x slower env steps on the CPU for the same expert success).
"""

from __future__ import annotations

from isaaclab.controllers.differential_ik_cfg import DifferentialIKControllerCfg
from isaaclab.envs.mdp.actions.actions_cfg import BinaryJointPositionActionCfg, DifferentialInverseKinematicsActionCfg
from isaaclab.sensors import FrameTransformerCfg
from isaaclab.sensors.frame_transformer.frame_transformer_cfg import OffsetCfg

from ...assets import franka
from .scene import wrist_camera_cfg

IK_ACTION_SCALE = 0.5  # Isaac Lab's Franka IK-Rel envs


def ee_frame_cfg() -> FrameTransformerCfg:
    """Tool centre point and fingertips relative to the robot base (Isaac Lab's stack-env frames)."""
    robot = "{ENV_REGEX_NS}/Robot/(Geometry/.*/)?"
    return FrameTransformerCfg(
        prim_path=robot + "panda_link0",
        debug_vis=False,
        target_frames=[
            FrameTransformerCfg.FrameCfg(
                prim_path=robot + "panda_hand",
                name="end_effector",
                offset=OffsetCfg(pos=(0.0, 0.0, franka.TCP_OFFSET_FRAME)),
            ),
            FrameTransformerCfg.FrameCfg(
                prim_path=robot + "panda_rightfinger", name="tool_rightfinger", offset=OffsetCfg(pos=(0.0, 0.0, 0.046))
            ),
            FrameTransformerCfg.FrameCfg(
                prim_path=robot + "panda_leftfinger", name="tool_leftfinger", offset=OffsetCfg(pos=(0.0, 0.0, 0.046))
            ),
        ],
    )


def arm_action_cfg() -> DifferentialInverseKinematicsActionCfg:
    from ...mdp.actions import ControlStepDifferentialIKActionCfg

    return ControlStepDifferentialIKActionCfg(
        asset_name="robot",
        joint_names=["panda_joint.*"],
        body_name=franka.HAND_BODY,
        controller=DifferentialIKControllerCfg(command_type="pose", use_relative_mode=True, ik_method="dls"),
        scale=IK_ACTION_SCALE,
        body_offset=DifferentialInverseKinematicsActionCfg.OffsetCfg(pos=(0.0, 0.0, franka.TCP_OFFSET_IK)),
    )


def gripper_action_cfg() -> BinaryJointPositionActionCfg:
    return BinaryJointPositionActionCfg(
        asset_name="robot",
        joint_names=["panda_finger.*"],
        open_command_expr={franka.GRIPPER_JOINTS: franka.GRIPPER_OPEN},
        close_command_expr={franka.GRIPPER_JOINTS: franka.GRIPPER_CLOSED},
    )


def franka_robot_cfg(source: str = "offline", colliders: str = "mesh"):
    """The Franka ``ArticulationCfg`` with its physics-dependent parts as presets that follow ``physics=``.

    Gravity is handled per backend (Newton: MuJoCo gravity compensation per link; PhysX: ``disable_gravity``)
    and Isaac Lab's asset has a USD physics variant per backend, so those fields are ``preset(default=<Newton>,
    isaacsim_physx=<PhysX>, physx=<PhysX>)``, resolved together with the physics preset of the same name.
    ``source``/``colliders``: see :func:`vla_isaac.assets.franka.franka_cfg`.
    """
    from isaaclab_tasks.utils import preset

    robot = franka.franka_cfg(source=source, colliders=colliders, physics="newton")
    physx = franka.franka_cfg(source=source, colliders=colliders, physics="physx")

    def by_physics(newton_value, physx_value):
        return preset(default=newton_value, isaacsim_physx=physx_value, physx=physx_value)

    robot.spawn.rigid_props = by_physics(robot.spawn.rigid_props, physx.spawn.rigid_props)
    if getattr(robot.spawn, "variants", None):  # Isaac Lab's asset: USD variant "Physics" (mujoco / physx)
        robot.spawn.variants["Physics"] = by_physics(robot.spawn.variants["Physics"], physx.spawn.variants["Physics"])
    return robot


def configure_franka(env_cfg, source: str = "offline", colliders: str = "mesh") -> None:
    """Put the Franka into a cube-task env cfg: robot, ee frame, wrist camera, actions, gripper attributes.

    ``source``/``colliders``: see :func:`vla_isaac.assets.franka.franka_cfg`.
    """
    scene = env_cfg.scene
    scene.robot = franka_robot_cfg(source=source, colliders=colliders)
    scene.ee_frame = ee_frame_cfg()
    if getattr(scene, "table_cam", None) is not None:  # cameras enabled: same image size as the table cam
        size = (scene.table_cam.height, scene.table_cam.width)
        scene.wrist_cam = wrist_camera_cfg(franka.hand_prim_path(source), size)
    env_cfg.actions.arm_action = arm_action_cfg()
    env_cfg.actions.gripper_action = gripper_action_cfg()
    # read by isaaclab_tasks.contrib.stack.mdp (gripper_pos, object_grasped, cubes_stacked)
    env_cfg.gripper_joint_names = [franka.GRIPPER_JOINTS]
    env_cfg.gripper_open_val = franka.GRIPPER_OPEN
    env_cfg.gripper_threshold = 0.005
