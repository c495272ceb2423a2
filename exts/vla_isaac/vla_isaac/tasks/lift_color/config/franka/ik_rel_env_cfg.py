"""Franka Panda, relative differential-IK arm actions + binary gripper, for Lift-Cube-Color."""

from isaaclab.utils import configclass

from ....common.franka import configure_franka
from ...lift_color_env_cfg import LiftColorEnvCfg


@configclass
class FrankaLiftColorEnvCfg(LiftColorEnvCfg):
    franka_source: str = "offline"
    """``offline`` (example-robot-data USD) or ``isaaclab`` (Isaac Lab's Nucleus asset)."""
    franka_colliders: str = "mesh"

    def __post_init__(self):
        super().__post_init__()
        configure_franka(self, self.franka_source, self.franka_colliders)
