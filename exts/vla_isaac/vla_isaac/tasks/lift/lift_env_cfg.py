"""Lift-Cube: pick up the red cube from the table (robot-neutral part of the env cfg).

The robot, its end-effector frame, wrist camera and actions are filled in by ``config/<robot>/``.
Observation group ``policy`` uses the key names of NVIDIA's Cosmos stack data, so recorded files line up
with it; group ``expert`` is the privileged state vector the RL expert reads (the recorder stores only
``policy``); success = the cube held between the fingertips 10 cm above the table for 10 consecutive steps.
"""

from __future__ import annotations

import math
from dataclasses import MISSING

from isaaclab.assets import RigidObjectCfg
from isaaclab.envs import ManagerBasedRLEnvCfg
from isaaclab.managers import ObservationGroupCfg as ObsGroup
from isaaclab.managers import ObservationTermCfg as ObsTerm
from isaaclab.managers import RewardTermCfg as RewTerm
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

CUBES = [SceneEntityCfg("cube_1")]
CUBE_SPAWN_RANGE = {
    "x": (0.4, 0.6),
    "y": (-0.12, 0.12),
    "z": (common.CUBE_SIZE / 2, common.CUBE_SIZE / 2),
    "yaw": (-math.pi / 4, math.pi / 4),  # a cube is symmetric under 90 degree turns
}
LIFT_HEIGHT = 0.10  # success: cube centre this far above its resting height [m] ...
LIFT_HOLD_STEPS = 10  # ... for this many consecutive env steps ...
GRASP_DISTANCE = 0.03  # ... with its centre this close to the tool centre (held between the fingertips) [m]


@configclass
class LiftSceneCfg(common.TableSceneCfg):
    cube_1: RigidObjectCfg = common.cube_cfg("Cube_1", common.RED, (0.5, 0.0))


ActionsCfg = common.ArmGripperActionsCfg


@configclass
class ObservationsCfg:
    PolicyCfg = common_obs.cube_policy_obs_cfg(CUBES)

    @configclass
    class StateCfg(ObsGroup):
        """Privileged state for a state-based policy (the RL expert): joint state, tool-centre pose, cube pose,
        the reaching error, the goal height and the last action; one concatenated vector, in this order."""

        joint_pos = ObsTerm(func=mdp.joint_pos_rel)
        joint_vel = ObsTerm(func=mdp.joint_vel_rel)
        eef_pos = ObsTerm(func=mdp.ee_frame_pos)
        eef_quat = ObsTerm(func=mdp.ee_frame_quat)
        cube_positions = ObsTerm(func=mdp.cube_positions, params={"cube_cfgs": CUBES})
        cube_orientations = ObsTerm(func=mdp.cube_orientations, params={"cube_cfgs": CUBES})
        cube_pos_rel_ee = ObsTerm(func=mdp.cube_pos_rel_ee)
        target_height = ObsTerm(func=mdp.lift_target_height, params={"goal_height": LIFT_HEIGHT})
        actions = ObsTerm(func=mdp.last_action)

        def __post_init__(self):
            self.enable_corruption = False
            self.concatenate_terms = True

    policy: PolicyCfg = PolicyCfg()
    expert: StateCfg = StateCfg()
    """Read by ``vla_isaac.rl_expert.RLExpert``; the RL training variant (``Lift-Cube-RL``) uses it as ``policy``."""


EventCfg = common_events.cube_reset_events_cfg(CUBES, CUBE_SPAWN_RANGE, min_separation=0.1)


@configclass
class RewardsCfg:
    """Shaped as Isaac Lab's lift: reach, lift, goal tracking (coarse + fine), small action/joint penalties.

    ``reach_coarse`` is not in Isaac Lab's lift: the hand starts ~0.27 m from the cube, where ``reach`` (std 0.1)
    pays 0.005 per step, less than the joint-velocity penalty of an untrained actor (~0.012); without it the
    episode reward of a first short CPU run stayed at 0. std 0.3 pays 0.28 there.
    """

    reach = RewTerm(func=mdp.ee_cube_distance, weight=1.0, params={"std": 0.1})
    reach_coarse = RewTerm(func=mdp.ee_cube_distance, weight=1.0, params={"std": 0.3})
    lift = RewTerm(func=mdp.cube_lifted, weight=5.0, params={"minimal_height": 0.04})
    hold = RewTerm(func=mdp.cube_held, weight=10.0, params={"minimal_height": 0.04})
    goal_tracking = RewTerm(  # also logs Metrics/success_rate (the success term's definition)
        func=mdp.cube_goal_height,
        weight=16.0,
        params={"std": 0.3, "goal_height": LIFT_HEIGHT, "hold_steps": LIFT_HOLD_STEPS, "grasp_distance": GRASP_DISTANCE},
    )
    goal_tracking_fine = RewTerm(
        func=mdp.cube_goal_height, weight=5.0, params={"std": 0.05, "goal_height": LIFT_HEIGHT}
    )
    action_rate = RewTerm(func=mdp.action_rate_l2, weight=-1e-4)
    joint_vel = RewTerm(func=mdp.joint_vel_l2, weight=-1e-4, params={"asset_cfg": SceneEntityCfg("robot")})


@configclass
class TerminationsCfg:
    time_out = DoneTerm(func=mdp.time_out, time_out=True)
    cube_1_dropping = common_terminations.cube_dropping("cube_1")
    success = DoneTerm(
        func=mdp.CubeLiftedAndHeld,
        params={"minimal_height": LIFT_HEIGHT, "hold_steps": LIFT_HOLD_STEPS, "grasp_distance": GRASP_DISTANCE,
                "cube_cfg": SceneEntityCfg("cube_1")},
    )


@configclass
class LiftCubeEnvCfg(PresetPhysicsMixin, ManagerBasedRLEnvCfg):
    """Lift the red cube. 20 Hz control (dt 0.01 s, decimation 5, as Isaac Lab's stack env), 10 s episodes."""

    scene: LiftSceneCfg = LiftSceneCfg(num_envs=1, env_spacing=2.5)
    observations: ObservationsCfg = ObservationsCfg()
    actions: ActionsCfg = ActionsCfg()
    events: EventCfg = EventCfg()
    rewards: RewardsCfg = RewardsCfg()
    terminations: TerminationsCfg = TerminationsCfg()
    commands = None
    curriculum = None

    instruction: str = "lift the red cube"
    """Default natural-language instruction (recorded with demos, given to policies)."""
    instruction_templates: list[str] = [
        "lift the red cube",
        "pick up the red cube",
        "grasp the red cube and lift it",
        "raise the red cube off the table",
    ]
    """Paraphrases of :attr:`instruction` for language augmentation (plain strings, no placeholders)."""

    cube_names: list[str] = ["cube_1"]
    """Scene names of the cubes, in the order of ``cube_positions`` / ``cube_orientations``."""
    cube_size: float = common.CUBE_SIZE
    table_bounds: tuple = common.TABLE_BOUNDS
    cube_spawn_range: dict = CUBE_SPAWN_RANGE

    # gripper description read by isaaclab_tasks.contrib.stack.mdp terms; set by the robot config
    gripper_joint_names: list[str] = MISSING
    gripper_open_val: float = MISSING
    gripper_threshold: float = 0.005

    def __post_init__(self):
        self.decimation = 5
        self.episode_length_s = 10.0
        self.sim = SimulationCfg(device="cpu", dt=PHYSICS_DT, render_interval=self.decimation)
        self.sim.physics = PhysicsCfg()  # a preset: physics=newton_mjwarp (default) | newton_mujoco_c | physx
