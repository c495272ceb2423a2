"""The table-top scene shared by the cube tasks: procedural table, ground, light, cubes and cameras.

Everything is procedural (no Nucleus assets), so the scene builds offline. Layout (env frame, metres):
the robot base stands on the table top at the origin (z = 0), the table spans x in [-0.15, 1.05] and
y in [-0.5, 0.5], cubes are spawned in front of the robot around x = 0.5.
"""

from __future__ import annotations

from dataclasses import MISSING

import isaaclab.sim as sim_utils
from isaaclab.assets import ArticulationCfg, AssetBaseCfg, RigidObjectCfg
from isaaclab.scene import InteractiveSceneCfg
from isaaclab.sensors import CameraCfg, FrameTransformerCfg
from isaaclab.utils import configclass

CUBE_SIZE = 0.05  # edge [m]
CUBE_MASS = 0.1  # [kg]
CUBE_FRICTION = 1.0

TABLE_SIZE = (1.2, 1.0, 0.05)  # x, y, thickness [m]
TABLE_CENTER = (0.45, 0.0)  # table top at z = 0
TABLE_COLOR = (0.55, 0.45, 0.35)
GROUND_Z = -1.05  # floor under the table [m]

RED = (0.8, 0.1, 0.1)
GREEN = (0.1, 0.7, 0.1)
BLUE = (0.1, 0.2, 0.8)

TABLE_BOUNDS = (
    (TABLE_CENTER[0] - TABLE_SIZE[0] / 2, TABLE_CENTER[0] + TABLE_SIZE[0] / 2),
    (TABLE_CENTER[1] - TABLE_SIZE[1] / 2, TABLE_CENTER[1] + TABLE_SIZE[1] / 2),
)
"""((x_min, x_max), (y_min, y_max)) of the table top in the env frame."""

DEFAULT_IMAGE_SIZE = (128, 128)  # (height, width): CPU-friendly; (200, 200) matches NVIDIA's Cosmos data

# The context camera frames the cube spawn area (x 0.4-0.6 m, y +-0.12 m) with a margin, so a cube covers
# ~6 px of a 64 px view and its position decides which image tokens light up; the earlier wide view
# (whole arm, cube ~3 px) left the tiny model's context view blind (docs/benchmarks.md, "Conditioning").
TABLE_CAM_EYE = (1.05, 0.3, 0.55)  # [m] in front of and to the right of the workspace ...
TABLE_CAM_TARGET = (0.5, 0.0, 0.08)  # ... looking at the spawn area, the hand in view when it works there
TABLE_CAM_FOCAL_LENGTH = 32.0  # [mm]: ~36 degree field of view, +-0.25 m around the target

_PINHOLE = dict(focal_length=24.0, focus_distance=400.0, horizontal_aperture=20.955, clipping_range=(0.05, 3.0))


def _static_box(prim_path: str, size, pos, color) -> AssetBaseCfg:
    return AssetBaseCfg(
        prim_path=prim_path,
        init_state=AssetBaseCfg.InitialStateCfg(pos=pos),
        spawn=sim_utils.CuboidCfg(
            size=size,
            collision_props=sim_utils.UsdPhysicsCollisionCfg(),
            physics_material=sim_utils.RigidBodyMaterialCfg(static_friction=1.0, dynamic_friction=1.0),
            visual_material=sim_utils.PreviewSurfaceCfg(diffuse_color=color),
        ),
    )


def table_cfg() -> AssetBaseCfg:
    return _static_box(
        "{ENV_REGEX_NS}/Table", TABLE_SIZE, (*TABLE_CENTER, -TABLE_SIZE[2] / 2), TABLE_COLOR
    )


def ground_cfg() -> AssetBaseCfg:
    return _static_box("/World/Ground", (40.0, 40.0, 0.1), (0.0, 0.0, GROUND_Z - 0.05), (0.3, 0.3, 0.3))


def light_cfg() -> AssetBaseCfg:
    """A dome light (used by RTX; Newton's Warp renderer shades on its own)."""
    return AssetBaseCfg(
        prim_path="/World/light", spawn=sim_utils.DomeLightCfg(color=(0.75, 0.75, 0.75), intensity=3000.0)
    )


def cube_cfg(name: str, color: tuple[float, float, float], pos: tuple[float, float]) -> RigidObjectCfg:
    """A coloured 5 cm, 0.1 kg cube resting on the table at ``pos`` (x, y)."""
    return RigidObjectCfg(
        prim_path="{ENV_REGEX_NS}/" + name,
        init_state=RigidObjectCfg.InitialStateCfg(pos=(*pos, CUBE_SIZE / 2), rot=(0.0, 0.0, 0.0, 1.0)),
        spawn=sim_utils.CuboidCfg(
            size=(CUBE_SIZE,) * 3,
            rigid_props=sim_utils.UsdPhysicsRigidBodyCfg(),
            mass_props=sim_utils.MassCfg(mass=CUBE_MASS),
            collision_props=sim_utils.UsdPhysicsCollisionCfg(),
            physics_material=sim_utils.RigidBodyMaterialCfg(
                static_friction=CUBE_FRICTION, dynamic_friction=CUBE_FRICTION
            ),
            visual_material=sim_utils.PreviewSurfaceCfg(diffuse_color=color),
            semantic_tags=[("class", name.lower())],
        ),
    )


def look_at_ros(eye, target) -> tuple[float, float, float, float]:
    """Quaternion (xyzw) of a camera at ``eye`` looking at ``target`` (ROS optical frame: z forward,
    x right, y down; the world z axis is up)."""
    import torch

    from isaaclab.utils.math import quat_from_matrix

    eye_t, target_t = torch.tensor(eye, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    forward = torch.nn.functional.normalize(target_t - eye_t, dim=0)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up), dim=0)
    down = torch.linalg.cross(forward, right)
    quat = quat_from_matrix(torch.stack([right, down, forward], dim=1))
    return tuple(round(float(v), 6) for v in quat)


def table_camera_cfg(image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> CameraCfg:
    """Third-person context camera in front of the table on the right, framing the cube spawn area."""
    from ...physics import CameraRendererCfg

    return CameraCfg(
        prim_path="{ENV_REGEX_NS}/table_cam",
        update_period=0.0,
        height=image_size[0],
        width=image_size[1],
        data_types=["rgb"],
        spawn=sim_utils.PinholeCameraCfg(**{**_PINHOLE, "focal_length": TABLE_CAM_FOCAL_LENGTH}),
        offset=CameraCfg.OffsetCfg(
            pos=TABLE_CAM_EYE, rot=look_at_ros(TABLE_CAM_EYE, TABLE_CAM_TARGET), convention="ros"
        ),
        renderer_cfg=CameraRendererCfg(),  # Newton Warp; Isaac RTX with physics=physx / renderer=isaacsim_rtx
    )


def wrist_camera_cfg(hand_prim_path: str, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> CameraCfg:
    """Camera on the hand, looking along the fingers (a child prim of the concrete hand prim)."""
    from ...physics import CameraRendererCfg

    return CameraCfg(
        prim_path=hand_prim_path + "/wrist_cam",
        update_period=0.0,
        height=image_size[0],
        width=image_size[1],
        data_types=["rgb"],
        spawn=sim_utils.PinholeCameraCfg(**_PINHOLE),
        offset=CameraCfg.OffsetCfg(
            pos=(0.07, 0.0, 0.02), rot=(-0.16246, -0.16246, 0.68819, 0.68819), convention="ros"
        ),
        update_latest_camera_pose=True,  # a body-mounted camera's image freezes without it
        renderer_cfg=CameraRendererCfg(),  # Newton Warp; Isaac RTX with physics=physx / renderer=isaacsim_rtx
    )


@configclass
class TableSceneCfg(InteractiveSceneCfg):
    """Robot, table, ground, light and the two cameras; a task adds its cubes."""

    robot: ArticulationCfg = MISSING  # robot-specific (``config/<robot>/``), as the end-effector frame
    ee_frame: FrameTransformerCfg = MISSING
    table: AssetBaseCfg = table_cfg()
    ground: AssetBaseCfg = ground_cfg()
    light: AssetBaseCfg = light_cfg()
    table_cam: CameraCfg | None = table_camera_cfg()
    wrist_cam: CameraCfg | None = None  # robot-specific (mounted on the hand)


@configclass
class ArmGripperActionsCfg:
    """An arm action and a gripper action, both filled in by the robot config."""

    arm_action: object = MISSING
    gripper_action: object = MISSING
