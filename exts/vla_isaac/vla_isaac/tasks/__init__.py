"""The vla_isaac tasks. Importing this package registers their gym ids (cheap: no simulator is started)."""

from . import lift, stack  # noqa: F401  (registration side effects)

TASK_IDS = (
    "Lift-Cube",
    "Stack-Cube",
    "VLA-Lift-Cube-Franka-v0",
    "VLA-Stack-Cube-Franka-v0",
    "Lift-Cube-RL",  # state-only PPO variant of Lift-Cube (the RL expert trains on it)
    "VLA-Lift-Cube-Franka-RL-v0",
)
