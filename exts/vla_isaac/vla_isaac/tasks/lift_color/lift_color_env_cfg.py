"""Lift-Cube-Color: a red, a green and a blue cube at random places; each episode's instruction names one
("lift the green cube", or a paraphrase from ``instruction_templates``) and only lifting that one succeeds.

The instruction decides what to do: the same scene asks for three different motions, so a policy that
ignores its instruction lifts the named cube in about a third of the episodes at best. Built on Lift-Cube
(same robot set-up, cameras, control rate and success definition); the robot part is filled in by
``config/<robot>/``. Per episode (reset event :func:`.mdp.sample_target_cube`) each env draws its target
cube and a template; ``env.target_cube_index`` and ``env.instructions`` hold them
(:func:`vla_isaac.language.env_instructions` reads the instructions). Episodes end with ``success`` (the
named cube held 10 cm up for 10 steps), ``wrong_cube`` (another cube held so), a dropped cube or the time out.
"""

from __future__ import annotations

import math

from isaaclab.assets import RigidObjectCfg
from isaaclab.managers import EventTermCfg as EventTerm
from isaaclab.managers import ObservationTermCfg as ObsTerm
from isaaclab.managers import SceneEntityCfg
from isaaclab.managers import TerminationTermCfg as DoneTerm
from isaaclab.utils import configclass

from ... import mdp
from ..common import events as common_events
from ..common import scene as common
from ..common import terminations as common_terminations
from ..lift.lift_env_cfg import GRASP_DISTANCE, LIFT_HEIGHT, LIFT_HOLD_STEPS, LiftCubeEnvCfg, LiftSceneCfg
from ..lift.lift_env_cfg import ObservationsCfg as LiftObservationsCfg
from . import mdp as color_mdp

CUBE_NAMES = ["cube_1", "cube_2", "cube_3"]
CUBE_COLORS = ["red", "green", "blue"]
CUBES = [SceneEntityCfg(name) for name in CUBE_NAMES]
CUBE_SPAWN_RANGE = {
    "x": (0.4, 0.6),
    "y": (-0.15, 0.15),
    "z": (common.CUBE_SIZE / 2, common.CUBE_SIZE / 2),
    "yaw": (-math.pi / 4, math.pi / 4),
}
MIN_SEPARATION = 0.1  # [m] between cube centres: room for the open fingers beside the named cube


@configclass
class LiftColorSceneCfg(LiftSceneCfg):
    cube_1: RigidObjectCfg = common.cube_cfg("Cube_1", common.RED, (0.5, -0.12))
    cube_2: RigidObjectCfg = common.cube_cfg("Cube_2", common.GREEN, (0.5, 0.0))
    cube_3: RigidObjectCfg = common.cube_cfg("Cube_3", common.BLUE, (0.5, 0.12))


@configclass
class ObservationsCfg(LiftObservationsCfg):
    @configclass
    class PolicyCfg(LiftObservationsCfg.PolicyCfg):
        """Lift-Cube's policy group with all three cubes, plus the target (privileged, one-hot) and its position."""

        cube_positions = ObsTerm(func=mdp.cube_positions, params={"cube_cfgs": CUBES})
        cube_orientations = ObsTerm(func=mdp.cube_orientations, params={"cube_cfgs": CUBES})
        target_cube = ObsTerm(func=color_mdp.target_cube_one_hot)
        target_cube_position = ObsTerm(func=color_mdp.target_cube_position)
        instruction_index = ObsTerm(func=color_mdp.instruction_index)

    policy: PolicyCfg = PolicyCfg()
    expert = None  # Lift-Cube's RL-expert state names cube_1 only; no RL expert for this task


@configclass
class EventCfg(common_events.cube_reset_events_cfg(CUBES, CUBE_SPAWN_RANGE, MIN_SEPARATION)):
    sample_target = EventTerm(func=color_mdp.sample_target_cube, mode="reset", params={"fixed_target": None})


@configclass
class RewardsCfg:
    """No shaped rewards: this task is for demonstrations and evaluation (its success is the termination)."""


_HELD = {"minimal_height": LIFT_HEIGHT, "hold_steps": LIFT_HOLD_STEPS, "grasp_distance": GRASP_DISTANCE}


@configclass
class TerminationsCfg:
    time_out = DoneTerm(func=mdp.time_out, time_out=True)
    cube_1_dropping = common_terminations.cube_dropping("cube_1")
    cube_2_dropping = common_terminations.cube_dropping("cube_2")
    cube_3_dropping = common_terminations.cube_dropping("cube_3")
    success = DoneTerm(func=color_mdp.CubesLiftedAndHeld, params={"which": "target", **_HELD})
    wrong_cube = DoneTerm(func=color_mdp.CubesLiftedAndHeld, params={"which": "other", **_HELD})


@configclass
class LiftColorEnvCfg(LiftCubeEnvCfg):
    """Lift the cube the episode's instruction names. Lift-Cube's timing (20 Hz, 10 s episodes)."""

    scene: LiftColorSceneCfg = LiftColorSceneCfg(num_envs=1, env_spacing=2.5)
    observations: ObservationsCfg = ObservationsCfg()
    events: EventCfg = EventCfg()
    rewards: RewardsCfg = RewardsCfg()
    terminations: TerminationsCfg = TerminationsCfg()

    instruction: str = "lift the red cube"
    """An example instruction (the first template with the first colour); each episode draws its own."""
    instruction_templates: list[str] = [
        "lift the {color} cube",
        "pick up the {color} cube",
        "grasp the {color} cube and lift it",
        "raise the {color} cube off the table",
    ]
    """Paraphrases with a ``{color}`` placeholder; each episode formats one with its target's colour."""
    cube_names: list[str] = CUBE_NAMES
    cube_colors: list[str] = CUBE_COLORS
    """Colour word of each cube of ``cube_names``, as the instructions name it."""
    cube_spawn_range: dict = CUBE_SPAWN_RANGE
    per_episode_instruction: bool = True
    """Each env's instruction is drawn per episode (``env.instructions``), not ``instruction``."""
