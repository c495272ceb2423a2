"""Stack-Cube: build a tower of three cubes (robot-neutral part of the env cfg).

Same layout as Isaac Lab's Franka stack env and NVIDIA's Cosmos stack data: ``cube_1`` blue (bottom),
``cube_2`` red (middle), ``cube_3`` green (top); success (Isaac Lab's ``cubes_stacked``) = red on blue and
green on red, gripper open, cubes at rest. Observation keys as in the Cosmos data, plus a ``subtask_terms``
group (grasp/stack flags) like Isaac Lab's stack env, which Isaac Lab Mimic uses to split demos.
"""

from __future__ import annotations

import math
from dataclasses import MISSING

from isaaclab.assets import RigidObjectCfg
from isaaclab.envs import ManagerBasedRLEnvCfg
from isaaclab.managers import ObservationGroupCfg as ObsGroup
from isaaclab.managers import ObservationTermCfg as ObsTerm
from isaaclab.managers import SceneEntityCfg
from isaaclab.managers import TerminationTermCfg as DoneTerm
from isaaclab.sim import SimulationCfg
from isaaclab.utils import configclass

from ... import mdp
from ...physics import PHYSICS_DT, PhysicsCfg, PresetPhysicsMixin
from ..common import events as common_events
from ..common import observations as common_obs
from ..common import scene as common
from ..common import terminations as common_terminations

CUBES = [SceneEntityCfg("cube_1"), SceneEntityCfg("cube_2"), SceneEntityCfg("cube_3")]
CUBE_SPAWN_RANGE = {
    "x": (0.4, 0.6),
    "y": (-0.12, 0.12),
    "z": (common.CUBE_SIZE / 2, common.CUBE_SIZE / 2),
    "yaw": (-math.pi / 4, math.pi / 4),
}
CUBE_MIN_SEPARATION = 0.1  # [m] between cube centres at reset


@configclass
class StackSceneCfg(common.TableSceneCfg):
    cube_1: RigidObjectCfg = common.cube_cfg("Cube_1", common.BLUE, (0.4, 0.0))
    cube_2: RigidObjectCfg = common.cube_cfg("Cube_2", common.RED, (0.55, 0.05))
    cube_3: RigidObjectCfg = common.cube_cfg("Cube_3", common.GREEN, (0.6, -0.1))


ActionsCfg = common.ArmGripperActionsCfg


@configclass
class ObservationsCfg:
    PolicyCfg = common_obs.cube_policy_obs_cfg(CUBES)

    @configclass
    class SubtaskCfg(ObsGroup):
        """Subtask completion flags (Isaac Lab's stack env terms): red grasped, red on blue, green grasped."""

        grasp_1 = ObsTerm(
            func=mdp.object_grasped,
            params={
                "robot_cfg": SceneEntityCfg("robot"),
                "ee_frame_cfg": SceneEntityCfg("ee_frame"),
                "object_cfg": SceneEntityCfg("cube_2"),
            },
        )
        stack_1 = ObsTerm(
            func=mdp.object_stacked,
            params={
                "robot_cfg": SceneEntityCfg("robot"),
                "upper_object_cfg": SceneEntityCfg("cube_2"),
                "lower_object_cfg": SceneEntityCfg("cube_1"),
                "height_diff": common.CUBE_SIZE,
            },
        )
        grasp_2 = ObsTerm(
            func=mdp.object_grasped,
            params={
                "robot_cfg": SceneEntityCfg("robot"),
                "ee_frame_cfg": SceneEntityCfg("ee_frame"),
                "object_cfg": SceneEntityCfg("cube_3"),
            },
        )

        def __post_init__(self):
            self.enable_corruption = False
            self.concatenate_terms = False

    policy: PolicyCfg = PolicyCfg()
    subtask_terms: SubtaskCfg = SubtaskCfg()


EventCfg = common_events.cube_reset_events_cfg(CUBES, CUBE_SPAWN_RANGE, CUBE_MIN_SEPARATION)


@configclass
class TerminationsCfg:
    time_out = DoneTerm(func=mdp.time_out, time_out=True)
    cube_1_dropping = common_terminations.cube_dropping("cube_1")
    cube_2_dropping = common_terminations.cube_dropping("cube_2")
    cube_3_dropping = common_terminations.cube_dropping("cube_3")
    success = DoneTerm(func=mdp.cubes_stacked, params={"height_diff": common.CUBE_SIZE})


@configclass
class StackCubeEnvCfg(PresetPhysicsMixin, ManagerBasedRLEnvCfg):
    """Stack three cubes. 20 Hz control (dt 0.01 s, decimation 5, as Isaac Lab's stack env), 30 s episodes."""

    scene: StackSceneCfg = StackSceneCfg(num_envs=1, env_spacing=2.5)
    observations: ObservationsCfg = ObservationsCfg()
    actions: ActionsCfg = ActionsCfg()
    events: EventCfg = EventCfg()
    terminations: TerminationsCfg = TerminationsCfg()
    rewards = None
    commands = None
    curriculum = None

    instruction: str = "stack the red cube on the blue cube, then the green cube on the red cube"
    """Default natural-language instruction (recorded with demos, given to policies)."""
    instruction_templates: list[str] = [
        "stack the red cube on the blue cube, then the green cube on the red cube",
        "put the red cube on the blue cube and the green cube on top",
        "build a tower: blue at the bottom, then red, then green",
        "place the red cube onto the blue cube, then place the green cube onto the red cube",
    ]
    """Paraphrases of :attr:`instruction` for language augmentation (plain strings, no placeholders)."""

    cube_names: list[str] = ["cube_1", "cube_2", "cube_3"]
    """Scene names of the cubes, in the order of ``cube_positions`` / ``cube_orientations``."""
    stack_order: list[str] = ["cube_1", "cube_2", "cube_3"]
    """Bottom to top: each cube goes onto the one before it (used by the scripted expert)."""
    cube_size: float = common.CUBE_SIZE
    table_bounds: tuple = common.TABLE_BOUNDS
    cube_spawn_range: dict = CUBE_SPAWN_RANGE
    cube_min_separation: float = CUBE_MIN_SEPARATION

    gripper_joint_names: list[str] = MISSING
    gripper_open_val: float = MISSING
    gripper_threshold: float = 0.005

    def __post_init__(self):
        self.decimation = 5
        self.episode_length_s = 30.0
        self.sim = SimulationCfg(device="cpu", dt=PHYSICS_DT, render_interval=self.decimation)
        self.sim.physics = PhysicsCfg()  # a preset: physics=newton_mjwarp (default) | newton_mujoco_c | physx
