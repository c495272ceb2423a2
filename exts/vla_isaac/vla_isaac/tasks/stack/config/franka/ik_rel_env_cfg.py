"""Franka Panda, relative differential-IK arm actions + binary gripper, for Stack-Cube."""

from isaaclab.utils import configclass

from ....common.franka import configure_franka
from ...stack_env_cfg import StackCubeEnvCfg


@configclass
class FrankaStackCubeEnvCfg(StackCubeEnvCfg):
    franka_source: str = "offline"
    """``offline`` (example-robot-data USD) or ``isaaclab`` (Isaac Lab's Nucleus asset)."""
    franka_colliders: str = "mesh"

    def __post_init__(self):
        super().__post_init__()
        configure_franka(self, self.franka_source, self.franka_colliders)
