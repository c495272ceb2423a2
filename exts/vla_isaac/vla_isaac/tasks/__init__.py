"""The vla_isaac tasks. Importing this package registers their gym ids (cheap: no simulator is started)."""

from . import lift, lift_color, stack  # noqa: F401  (registration side effects)

TASK_IDS = (
    "Lift-Cube",
    "Stack-Cube",
    "VLA-Lift-Cube-Franka-v0",
    "VLA-Stack-Cube-Franka-v0",
    "Lift-Cube-RL",  # state-only PPO variant of Lift-Cube (the RL expert trains on it)
    "VLA-Lift-Cube-Franka-RL-v0",
    "Lift-Cube-Color",  # three cubes, the per-episode instruction names the one to lift
    "VLA-Lift-Cube-Color-Franka-v0",
)


def register() -> None:
    """No-op callback for Isaac Lab's train/play CLIs (``--external_callback vla_isaac.tasks.register``):
    importing this package registered the tasks already. Returns None: no command-line arguments consumed."""
    return None
