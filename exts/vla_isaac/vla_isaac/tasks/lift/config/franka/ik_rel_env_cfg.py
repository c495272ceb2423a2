"""Franka Panda, relative differential-IK arm actions + binary gripper, for Lift-Cube.

``FrankaLiftCubeRLEnvCfg`` is the variant an RL expert trains on (``Lift-Cube-RL``): the same scene, actions,
events and rewards, but no cameras, the privileged state group as ``policy`` and no success termination.
"""

from isaaclab.utils import configclass

from ....common.franka import configure_franka
from ...lift_env_cfg import LiftCubeEnvCfg


@configclass
class FrankaLiftCubeEnvCfg(LiftCubeEnvCfg):
    franka_source: str = "offline"
    """``offline`` (example-robot-data USD) or ``isaaclab`` (Isaac Lab's Nucleus asset)."""
    franka_colliders: str = "mesh"

    def __post_init__(self):
        super().__post_init__()
        configure_franka(self, self.franka_source, self.franka_colliders)


@configclass
class FrankaLiftCubeRLEnvCfg(FrankaLiftCubeEnvCfg):
    """Lift-Cube for PPO on privileged state (rsl-rl via ``isaaclab_rl``; ``scripts/train_expert.py``).

    * no cameras: PPO needs only state, and rendering would cost most of each step;
    * observation group ``policy`` = Lift-Cube's ``expert`` group (one vector), so a trained actor reads
      the same vector from ``obs["expert"]`` of the normal Lift-Cube env when it records demos;
    * same IK-Rel + gripper actions (7), so its demos have the VLA action layout;
    * no ``success`` termination: ending an episode on success would cut its positive rewards short (Isaac
      Lab's lift does not end on success either); the ``goal_tracking`` reward logs ``Metrics/success_rate``.
    """

    def __post_init__(self):
        self.scene.table_cam = None  # before configure_franka, which adds the wrist camera only with cameras
        super().__post_init__()
        self.observations.policy = self.observations.expert
        self.observations.expert = None
        self.terminations.success = None
